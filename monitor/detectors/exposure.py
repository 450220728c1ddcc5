"""Exposure and average picture level.

``luma_mean``      average picture level: mean luma 0..1 (full range).
``clipped_highlights``  fraction of pixels whose luma is at or above ``clip_high_threshold``
                   (0.98 of full scale, i.e. at nominal white, where a washed-out or
                   over-exposed picture piles up). Clean footage 0-0.09 (a white bird in
                   daylight), over-exposure 0.08-0.35.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class ExposureSettings(DetectorSettingsBase):
    clip_high_threshold: float = Field(
        0.98, gt=0.0, le=1.0,
        description="Luma (0..1, full range) at or above which a pixel counts as clipped white "
        "(swscale maps limited-range Y 235, nominal white, to 1.0).")


@register_detector
class ExposureDetector(FrameDetector):
    name = "exposure"
    keys = ("luma_mean", "clipped_highlights")
    Settings = ExposureSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [
            # clipped white: clean footage 0-0.09 (a white bird in daylight), a washed out or
            # over-exposed picture 0.08-0.35 (docs/degradations.md)
            dict(condition="overexposed", key="clipped_highlights", comparison="above", threshold=0.15,
                 clear_threshold=0.08, smoothing_seconds=2.0, min_duration=1.5, clear_duration=5.0,
                 severity="warning", cooldown=60.0,
                 description="At least 15 % of the picture clipped at white (over-exposure, gain or "
                             "level error)."),
            # average picture level; for the normal range of programme material (night scenes and
            # snow are legitimate) only long, gross departures: info
            dict(condition="too_dark", key="luma_mean", comparison="below", threshold=0.06,
                 clear_threshold=0.08, smoothing_seconds=5.0, min_duration=10.0, clear_duration=5.0,
                 severity="info", cooldown=300.0, update_interval=None,
                 suppressed_by=["black", "underexposed", "level_collapse"],
                 description="Average picture level <= 6 % for 10 s (a black picture is 'black')."),
            dict(condition="too_bright", key="luma_mean", comparison="above", threshold=0.90,
                 clear_threshold=0.85, smoothing_seconds=5.0, min_duration=10.0, clear_duration=5.0,
                 severity="info", cooldown=300.0, update_interval=None,
                 description="Average picture level >= 90 % for 10 s (white or washed-out picture)."),
        ]

    def measure(self, pic: Picture) -> dict[str, float]:
        y = pic.y
        return {"luma_mean": float(y.mean(dtype=np.float64)),
                "clipped_highlights": float(np.count_nonzero(y >= self.settings.clip_high_threshold)) / y.size}
