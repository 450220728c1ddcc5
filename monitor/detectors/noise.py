"""Noise, relative to the stream's own.

``noise_sigma``    noise standard deviation in 8-bit levels, mean over R, G, B, robust
                   Immerkaer estimate (see :func:`estimate_noise_sigma`), on the sampled frame.

The ``noisy`` rule reads ``noise_native`` (:mod:`monitor.detectors.measures`), the noise at
source resolution, which reads the same at 640 px, 720p and 1080p.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from monitor.gross_rules import FAST_WARMUP

from .registry import DetectorSettingsBase, FrameDetector, Picture, check_frame, register_detector


class NoiseSettings(DetectorSettingsBase):
    noise_exclude_saturated: bool = Field(
        True, description="Ignore pixels next to clipped values (<=2 or >=253): clipping hides noise.")


# Immerkaer's noise mask N = [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of two second
# differences [1,-2,1]; it cancels smooth image structure (up to second order) and passes white
# noise with a gain of sqrt(sum(N**2)) = 6.
_MAD_TO_SIGMA = 1.0 / (0.6744897501960817 * 6.0)
_NOISE_MAX_SAMPLES = 1 << 17


def estimate_noise_sigma(frame_rgb: np.ndarray, exclude_saturated: bool = True) -> float:
    """Noise sigma in 8-bit levels: robust Immerkaer estimate, mean over R, G and B.

    Immerkaer (1996, "Fast noise variance estimation") convolves with the mask ``N`` above and
    averages ``|I*N|``; here the *median* of ``|I*N|`` is used instead of the mean
    (``sigma = median/(0.6745*6)``), which keeps edges and texture -- a minority of the pixels
    -- from inflating the estimate. Pixels next to clipped values (<=2, >=253) are ignored,
    because clipping removes noise. Each colour channel is estimated separately and the three
    are averaged, so noise added per channel and noise added to all channels alike read the
    same. On large frames the median is taken over a regular subsample of the responses.
    """
    a = check_frame(frame_rgb)
    if min(a.shape[:2]) < 3:
        return float("nan")
    f = a.astype(np.float32)
    d = f[:, :-2] - 2.0 * f[:, 1:-1] + f[:, 2:]
    resp = np.abs(d[:-2] - 2.0 * d[1:-1] + d[2:])  # (H-2, W-2, 3)
    step = 1
    while resp.shape[0] * resp.shape[1] / (step * step) > _NOISE_MAX_SAMPLES:
        step += 1
    resp = resp[::step, ::step]
    valid = None
    if exclude_saturated:
        clipped = (a <= 2) | (a >= 253)
        if clipped.any():
            near = np.zeros(resp.shape, dtype=bool)
            for dy in range(3):
                for dx in range(3):
                    near |= clipped[dy:dy + clipped.shape[0] - 2, dx:dx + clipped.shape[1] - 2][::step, ::step]
            valid = ~near
    sigmas = []
    for c in range(3):
        r = resp[..., c]
        r = r[valid[..., c]] if valid is not None else r.ravel()
        if r.size < 64:
            continue
        sigmas.append(float(np.median(r)) * _MAD_TO_SIGMA)
    if not sigmas:
        return float("nan")
    return float(np.mean(sigmas))


@register_detector
class NoiseDetector(FrameDetector):
    name = "noise"
    keys = ("noise_sigma",)
    Settings = NoiseSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        # gross noise is heavy_noise's (warning)
        return [dict(condition="noisy", key="noise_native", comparison="above", drop_points=2.0,
                     clear_drop_points=1.0, baseline="median", baseline_seconds=300.0, **FAST_WARMUP,
                     mad_factor=3.0, smoothing_seconds=2.0, min_duration=2.0, clear_duration=5.0,
                     severity="info", cooldown=300.0, suppressed_by=["heavy_noise"],
                     description="Noise sigma 2 levels (8-bit, source resolution) above the stream's own "
                                 "5-minute median.")]

    def measure(self, pic: Picture) -> dict[str, float]:
        return {"noise_sigma": estimate_noise_sigma(pic.rgb, self.settings.noise_exclude_saturated)}
