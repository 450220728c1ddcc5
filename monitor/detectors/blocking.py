"""Blocking: the codec's 8x8 block grid showing through.

``blockiness``     8x8 block-boundary discontinuity ratio: mean luma gradient across block
                   boundaries / mean gradient inside blocks. ~1.0 for clean pictures,
                   larger when blocky (JPEG q5 of a natural image: ~2-4).

The block grid moves when the frame is scaled, so blockiness must know the source size
(``Picture.source_size``); on the decoded luma plane (``Picture.luma_native``) it runs at
the codec's own grid.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from .registry import DetectorSettingsBase, FrameDetector, Picture, register_detector

BLOCKINESS_FLAT_BLOCKS = 10.0  # blockiness of blocks flat inside with steps between them (cap)


class BlockinessSettings(DetectorSettingsBase):
    block_size: int = Field(8, ge=2, description="Codec block size in source pixels (JPEG/MPEG: 8).")
    blockiness_min_period: float = Field(
        3.5, ge=2.0,
        description="Smallest block period in *sampled-frame* pixels that is still measured; "
        "when the frame is downscaled so much that the grid is finer than this, the direction "
        "is skipped (both skipped -> nan).")


def _grid_ratio(profile: np.ndarray, period: float) -> tuple[float, float] | None:
    """(boundary mean, inner mean) of a 1-D gradient profile over a block grid of ``period``.

    ``profile[i]`` is the gradient between samples ``i`` and ``i+1``, i.e. at edge position
    ``i+1``; grid lines lie at multiples of ``period`` (edge coordinates), which is where a
    codec grid at multiples of ``block_size`` ends up after an edge-aligned resize.
    """
    pos = np.arange(1, profile.size + 1, dtype=np.float64)
    phase = np.mod(pos, period)
    dist = np.minimum(phase, period - phase)  # distance to the nearest grid line
    boundary = dist < 0.5
    # leave the two positions next to a line out of "inner": ringing, deblocking and the
    # resampling kernel spread a block edge over them
    inner = dist >= (1.5 if period >= 6.0 else 1.0)
    if not boundary.any() or not inner.any():
        return None
    return _trimmed_mean(profile[boundary]), _trimmed_mean(profile[inner])


def _trimmed_mean(a: np.ndarray, keep: float = 0.9) -> float:
    """Mean of the lowest ``keep`` share of ``a``: the few grid lines that a flat graphic's
    hard edges (a lower-third bar on a multiple of 8) happen to fall on do not count, a
    codec's block edges on most lines do."""
    n = max(1, int(math.ceil(keep * a.size)))
    return float(np.partition(a, n - 1)[:n].mean()) if n < a.size else float(a.mean())


def blockiness(
    y: np.ndarray,
    block_size: int = 8,
    scale: tuple[float, float] = (1.0, 1.0),
    min_period: float = 3.5,
) -> float:
    """Block-boundary discontinuity ratio of luma ``y``; ~1 clean, >1 blocky, nan if unmeasurable.

    ``scale`` = (sampled width / source width, sampled height / source height): the codec grid
    of ``block_size`` source pixels has a period of ``block_size*scale`` sampled pixels.
    Horizontal and vertical discontinuities are pooled (sum of boundary means over sum of
    inner means of the directions whose period is at least ``min_period``); each mean leaves
    out the strongest 10 % of its lines (graphics edges that fall on the grid).
    """
    num = 0.0
    den = 0.0
    # steps across columns (period along the width), then across rows
    for axis, period in ((1, block_size * scale[0]), (0, block_size * scale[1])):
        if period >= min_period and y.shape[axis] > 2 * period:
            r = _grid_ratio(np.abs(np.diff(y, axis=axis)).mean(axis=1 - axis), period)
            if r is not None:
                num += r[0]
                den += r[1]
    if den <= 1e-6:
        # flat inside the blocks: a flat picture (or no measurable direction) has no grid to
        # see, one with steps of a level or more on the grid lines only is pixelated, as blocky
        # as it gets (a near-black frame of a fade, with faint steps, is not)
        level = 1.0 if np.issubdtype(y.dtype, np.integer) or float(np.max(y)) > 1.5 else 1.0 / 255.0
        return BLOCKINESS_FLAT_BLOCKS if num >= level else float("nan")
    return min(num / den, BLOCKINESS_FLAT_BLOCKS)


@register_detector
class BlockinessDetector(FrameDetector):
    name = "blockiness"
    keys = ("blockiness",)
    Settings = BlockinessSettings

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        # on the decoded luma (source resolution) clean footage stays below 1.4 (95th percentile)
        # and MPEG-2 starved of bits reaches 1.8-2.9; 2.5 s so that a VP8 fade from black (its
        # first 1.5 s at 1.9-3.0: real blocking, but part of the programme) does not fire
        return [dict(condition="blocky", key="blockiness", comparison="above", threshold=1.8,
                     clear_threshold=1.6, smoothing_seconds=2.0, min_duration=2.5, clear_duration=5.0,
                     severity="warning", cooldown=60.0,
                     description="8x8 block-boundary discontinuity ratio >= 1.8 (clean ~1.0-1.45).")]

    def measure(self, pic: Picture) -> dict[str, float]:
        s = self.settings
        if pic.luma_native is not None:
            # int16 differences: a fifth of the float32 cost on a 1080p plane
            return {"blockiness": blockiness(pic.luma_native.astype(np.int16), s.block_size, (1.0, 1.0),
                                             s.blockiness_min_period)}
        return {"blockiness": blockiness(pic.y, s.block_size, pic.scale, s.blockiness_min_period)}
