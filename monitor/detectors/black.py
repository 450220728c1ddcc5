"""Black picture, as FFmpeg ``blackdetect``.

``black``          fraction of pixels whose luma is below ``black_pixel_threshold`` (0..1).
                   The picture is black when it is ``>= black_ratio_threshold`` (0.98), as
                   FFmpeg ``blackdetect`` (``pix_th=0.10``, ``picture_black_ratio_th=0.98``).
``black_seconds``  how long the picture has been black without a break, on the stream's
                   own clock (pts, or wall time when pts is unknown); 0 when not black.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class BlackSettings(DetectorSettingsBase):
    black_pixel_threshold: float = Field(
        0.10, ge=0.0, le=1.0,
        description="Luma (0..1, full range) below which a pixel is black. FFmpeg blackdetect "
        "pix_th=0.10 (FFmpeg scales it into the limited 16-235 range of the Y plane; here the "
        "RGB frame is full range, so 0.10 of full scale is the same level).")
    black_ratio_threshold: float = Field(
        0.98, ge=0.0, le=1.0,
        description="Fraction of black pixels at or above which the picture is black. "
        "FFmpeg picture_black_ratio_th=0.98.")
    black_min_duration: float = Field(
        2.0, ge=0.0,
        description="Seconds the picture must stay black before it is reported (FFmpeg d=2.0). "
        "Applied by the alert rule 'black'.")


def black_fraction(y: np.ndarray, pixel_threshold: float = 0.10) -> float:
    """Fraction of pixels of luma ``y`` (0..1) below ``pixel_threshold``."""
    return float(np.count_nonzero(y < pixel_threshold)) / y.size


@register_detector
class BlackDetector(FrameDetector):
    name = "black"
    keys = ("black", "black_seconds")
    Settings = BlackSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [dict(condition="black", key="black", comparison="above", threshold=s.black_ratio_threshold,
                     clear_threshold=min(s.black_ratio_threshold, 0.95), min_duration=s.black_min_duration,
                     clear_duration=1.0, severity="critical",
                     description="Black picture: >= 98% of pixels below 0.10 luma for 2 s (FFmpeg blackdetect).")]

    def reset(self) -> None:
        self._since: float | None = None
        self._last_t: float | None = None

    def measure(self, pic: Picture) -> dict[str, float]:
        s, t = self.settings, pic.t
        bf = black_fraction(pic.y, s.black_pixel_threshold)
        if bf >= s.black_ratio_threshold:
            if self._since is None or (self._last_t is not None and t < self._last_t):
                self._since = t
            seconds = max(0.0, t - self._since)
        else:
            self._since = None
            seconds = 0.0
        self._last_t = t
        return {"black": bf, "black_seconds": seconds}
