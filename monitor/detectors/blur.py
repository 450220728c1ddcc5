"""Blur, relative to the stream's own.

``blur``           perceptual blur (Crete-Roffet et al. 2007, as ``skimage.measure.
                   blur_effect``): 0 = sharp, 1 = maximally blurred; *higher = blurrier*.
                   Depends on content and on the sampled resolution, so the default alert
                   compares it with the stream's own baseline.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field
from scipy import ndimage

from monitor.gross_rules import FAST_WARMUP

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class BlurSettings(DetectorSettingsBase):
    blur_kernel: int = Field(
        11, ge=3, description="Re-blur box size (pixels) of the Crete-Roffet blur measure "
        "(skimage blur_effect h_size=11).")


def _sobel_valid(y: np.ndarray, axis: int) -> np.ndarray:
    """|Sobel| derivative along ``axis`` on the interior (valid region, shape -2 each way)."""
    if axis == 0:
        d = y[2:, :] - y[:-2, :]
        return np.abs(d[:, :-2] + 2.0 * d[:, 1:-1] + d[:, 2:])
    d = y[:, 2:] - y[:, :-2]
    return np.abs(d[:-2, :] + 2.0 * d[1:-1, :] + d[2:, :])


def blur_effect(y: np.ndarray, h_size: int = 11) -> float:
    """Crete-Roffet no-reference blur of luma ``y``: 0 sharp .. 1 blurred (nan on flat pictures).

    Re-blurs the picture with a ``h_size`` box along each axis and measures how much of the
    directional (Sobel) variation survives; a picture that is already blurry loses little.
    Same definition as ``skimage.measure.blur_effect`` (max over the two axes; the border
    pixels are left out).
    """
    y = np.asarray(y, dtype=np.float32)
    if min(y.shape) < 5:
        return float("nan")
    out = []
    for axis in (0, 1):
        sharp = _sobel_valid(y, axis)
        blurred = _sobel_valid(ndimage.uniform_filter1d(y, h_size, axis=axis), axis)
        m1 = float(sharp.sum(dtype=np.float64))
        if m1 <= 1e-4 * sharp.size:  # flat picture: nothing to blur
            return float("nan")
        np.subtract(sharp, blurred, out=blurred)
        np.maximum(blurred, 0.0, out=blurred)
        m2 = float(blurred.sum(dtype=np.float64))
        out.append(abs(m1 - m2) / m1)
    return max(out)


# Immerkaer's noise mask N = [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of two second


@register_detector
class BlurDetector(FrameDetector):
    name = "blur"
    keys = ("blur",)
    Settings = BlurSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [dict(condition="blurry", key="blur", comparison="above", drop_points=0.15, clear_drop_points=0.08,
                     baseline="median", baseline_seconds=300.0, **FAST_WARMUP, mad_factor=3.0,
                     smoothing_seconds=3.0, min_duration=3.0, clear_duration=5.0, severity="warning",
                     cooldown=60.0,
                     description="Blur measure 0.15 above the stream's own 5-minute median (defocus, "
                                 "fogged or smeared lens).")]

    def measure(self, pic: Picture) -> dict[str, float]:
        return {"blur": blur_effect(pic.y, self.settings.blur_kernel)}
