"""Macroblock damage: packet loss, concealment and starved encoders.

``mb_edge_breaks`` fraction of the 16x16 macroblock edges that are *broken*: the luma step
                   across the edge, summed along its 16 pixels, exceeds ``mb_edge_ratio`` (3)
                   times the larger step on either side of it plus ``mb_edge_min_step`` (4)
                   levels per pixel. Packet loss concealment, smear and misplaced blocks break
                   macroblock edges in a part of the picture while the rest stays intact, which
                   the global ``blockiness`` ratio dilutes; starved encoders break them too.
                   Clean footage 0-0.003, packet-loss smear 0.004-0.05 (docs/degradations.md).
                   Measured on the source-resolution luma (``luma_native``), or on the frame
                   when it is at source resolution; nan otherwise (the grid is resampled away).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from monitor.gross_rules import FAST_WARMUP

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector


class MacroblockSettings(DetectorSettingsBase):
    macroblock_size: int = Field(
        16, ge=4, description="Macroblock size in source pixels (H.264/MPEG-2: 16); loss and "
        "concealment replace whole macroblocks.")
    mb_edge_ratio: float = Field(
        3.0, gt=1.0, description="A macroblock edge is broken when the step across it exceeds "
        "this many times the larger step on either side of it (plus mb_edge_min_step).")
    mb_edge_min_step: float = Field(
        4.0, ge=0.0, description="... plus this many 8-bit levels per pixel along the edge, so "
        "faint steps in flat areas (ordinary compression) do not count.")
    mb_edge_min_texture: float = Field(
        0.5, ge=0.0, description="... and only where the picture varies along the edge by at least "
        "this many levels per pixel on one side of it: a flat graphic's edges that happen to lie "
        "on the grid (a lower-third bar) are not damage.")


def macroblock_edge_breaks(y8: np.ndarray, block: int = 16, ratio: float = 3.0,
                           min_step: float = 4.0, min_texture: float = 0.0) -> float:
    """Fraction of ``block``-pixel edges of the block grid of luma ``y8`` (8-bit levels) that are broken.

    An edge segment (``block`` pixels long, on a grid line at a multiple of ``block``) is
    broken when ``sum|step across| > ratio * sum max(|step before|, |step after|) +
    min_step * block``: a discontinuity much stronger than the picture's own gradients on
    either side, as where a concealed or misplaced macroblock meets an intact one. Content
    edges rarely qualify: they are as steep one pixel off the grid line as on it, and only
    one grid line in ``block`` can hold them, except a flat graphic's, which ``min_texture``
    (levels per pixel of variation along the edge, on at least one side) leaves out. nan
    when the picture is smaller than 3 blocks.
    """
    y = np.asarray(y8)
    y = y.astype(np.int16) if y.dtype == np.uint8 else np.asarray(y, dtype=np.float32)
    h, w = y.shape
    if h < 3 * block or w < 3 * block:
        return float("nan")
    broken = 0
    total = 0
    for a in (y, y.T):  # vertical grid lines, then horizontal ones (as columns of the transpose)
        rows, cols = a.shape
        xs = np.arange(block, cols - 1, block)
        across = np.abs(a[:, xs] - a[:, xs - 1])
        beside = np.maximum(np.abs(a[:, xs - 1] - a[:, xs - 2]), np.abs(a[:, xs + 1] - a[:, xs]))
        n = rows // block
        across = across[:n * block].reshape(n, block, -1).sum(axis=1, dtype=np.float32)
        beside = beside[:n * block].reshape(n, block, -1).sum(axis=1, dtype=np.float32)
        broken_here = across > ratio * beside + min_step * block
        if min_texture > 0:
            # variation along the edge, on its either side: a flat graphic meeting another
            # flat colour on the grid has none; damage meets the picture's texture on one side
            along = [np.abs(np.diff(a[:n * block, c], axis=0, append=a[n * block - 1:n * block, c]))
                     .reshape(n, block, -1).sum(axis=1, dtype=np.float32) for c in (xs - 1, xs)]
            broken_here &= np.maximum(along[0], along[1]) >= min_texture * block
        broken += int(np.count_nonzero(broken_here))
        total += across.size
    return broken / total


@register_detector
class MacroblockDetector(FrameDetector):
    name = "macroblock"
    keys = ("mb_edge_breaks",)
    Settings = MacroblockSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        # relative, so that graphics with hard edges on the grid (a ticker) become part of the
        # baseline. Clean footage 0-0.003, packet-loss smear and starved encoders 0.004-0.05
        return [dict(condition="corrupted", key="mb_edge_breaks", comparison="above", drop_points=0.004,
                     clear_drop_points=0.002, baseline="median", baseline_seconds=300.0, **FAST_WARMUP,
                     smoothing_seconds=2.0, min_duration=1.5, clear_duration=5.0,
                     severity="warning", cooldown=60.0, suppressed_by=["black", "frozen"],
                     description="Broken macroblock edges 0.4 % above the stream's own 5-minute median "
                                 "(packet loss smear, concealment, corrupted picture).")]

    def measure(self, pic: Picture) -> dict[str, float]:
        s = self.settings
        if pic.luma_native is not None:
            y8 = pic.luma_native
        elif pic.at_source:  # the macroblock grid survives only an (almost) unscaled frame
            y8 = pic.y * 255.0
        else:
            return {"mb_edge_breaks": float("nan")}
        return {"mb_edge_breaks": macroblock_edge_breaks(y8, s.macroblock_size, s.mb_edge_ratio,
                                                         s.mb_edge_min_step, s.mb_edge_min_texture)}
