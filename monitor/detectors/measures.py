"""The resolution-aware measures of :mod:`monitor.picture_measures` (``noise_native``,
``edge_width``, ``white_level``) and the gross-damage rules set on them
(:mod:`monitor.gross_rules`)."""
from __future__ import annotations

from typing import Any

from monitor.gross_rules import gross_rules
from monitor.picture_measures import MEASURE_KEYS, measure

from .registry import FrameDetector, Picture, register_detector


@register_detector
class PictureMeasures(FrameDetector):
    name = "picture_measures"
    keys = MEASURE_KEYS

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return gross_rules()

    def measure(self, pic: Picture) -> dict[str, float]:
        src = pic.source_size
        down = float(src[0]) / pic.rgb.shape[1] if src else 1.0
        return measure(pic.y, pic.luma_native, down)
