"""Black bars.

``letterbox``      fraction of rows that are black bars at the top plus the bottom (0..1).
``pillarbox``      fraction of columns that are black bars at the left plus the right.
                   Both are 0 for a wholly black picture (that is ``black``'s job). A pixel is
                   black below ``black_pixel_threshold`` (:mod:`monitor.detectors.black`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class BarsSettings(DetectorSettingsBase):
    bar_black_ratio: float = Field(
        0.98, ge=0.0, le=1.0,
        description="A row (column) is part of a black bar when at least this fraction of its "
        "pixels is below black_pixel_threshold.")


def black_bars(y: np.ndarray, pixel_threshold: float = 0.10, line_ratio: float = 0.98) -> tuple[float, float]:
    """(letterbox, pillarbox): fraction of rows in black bars top+bottom, columns left+right.

    A bar is a run of lines from the edge inward in which at least ``line_ratio`` of the pixels
    are below ``pixel_threshold``. A wholly black picture has no bars (0, 0).
    """
    dark = y < pixel_threshold
    rows = dark.mean(axis=1) >= line_ratio
    cols = dark.mean(axis=0) >= line_ratio
    if rows.all() or cols.all():
        return 0.0, 0.0

    def edge_runs(flags: np.ndarray) -> int:
        first = int(np.argmin(flags))  # first non-bar line from the start
        last = int(np.argmin(flags[::-1]))  # ... from the end
        return first + last

    return edge_runs(rows) / rows.size, edge_runs(cols) / cols.size


def _bar_rule(condition: str, side: str) -> dict[str, Any]:
    return dict(condition=condition, key=condition, comparison="above", threshold=0.05,
                clear_threshold=0.02, min_duration=10.0, clear_duration=10.0, severity="info",
                cooldown=300.0, update_interval=None,
                description=f"Black bars cover >= 5% of the {side}.")


@register_detector
class BarsDetector(FrameDetector):
    name = "bars"
    keys = ("letterbox", "pillarbox")
    Settings = BarsSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [_bar_rule("letterbox", "height (top + bottom)"), _bar_rule("pillarbox", "width (left + right)")]

    def measure(self, pic: Picture) -> dict[str, float]:
        lb, pb = black_bars(pic.y, self.settings.black_pixel_threshold, self.settings.bar_black_ratio)
        return {"letterbox": lb, "pillarbox": pb}
