"""The picture detectors of one stream: every registered frame detector, run in order."""
from __future__ import annotations

from typing import Any

import numpy as np

from .registry import FrameDetector, Picture, check_frame, frame_detectors, luma, settings_model


class FrameDetectors:
    """Picture detectors for one stream (one instance of each registered frame detector,
    which keep their state: the freeze reference, black and freeze runs).

    ``source_size`` (width, height) of the decoded picture before the monitor downscaled it
    for sampling: needed only by blockiness, which must know where the codec's block grid
    lies in the sampled frame. Without it the frame is taken to be at source resolution.
    Grids finer than ``blockiness_min_period`` sampled pixels (e.g. 1280 wide scaled to
    384: 2.4 px) cannot be measured, and even a 4 px grid (720p at 640 wide) reads weaker
    than the codec's own; the stream worker therefore passes the decoded luma plane
    (``luma_native``) and the block measures run on that.
    """

    def __init__(self, settings: Any = None, source_size: tuple[int, int] | None = None) -> None:
        self.settings = settings or settings_model()()
        self.source_size = source_size
        self.detectors: list[FrameDetector] = [d(self.settings) for d in frame_detectors()]

    def reset(self) -> None:
        """Forget the previous picture (e.g. after a reconnect)."""
        for d in self.detectors:
            d.reset()

    def update(self, frame_rgb: np.ndarray, pts: float | None, wall_time: float,
               source_size: tuple[int, int] | None = None,
               luma_native: np.ndarray | None = None) -> dict[str, float]:
        """All picture detector values for one sampled frame (keys: ``frame_keys()``).

        ``pts`` in seconds on the stream's clock (None when unknown: wall time is used);
        ``source_size`` overrides the constructor's for this frame. ``luma_native``: the
        decoded picture's luma plane (``H x W``, 8-bit levels, limited or full range) at
        source resolution; when given, blockiness and mb_edge_breaks use it, so the codec's
        block grid is intact whatever size ``frame_rgb`` was scaled to.
        """
        a = check_frame(frame_rgb)
        if luma_native is not None:
            luma_native = np.asarray(luma_native)
            if luma_native.ndim != 2:
                raise ValueError(f"luma_native must be a 2-D plane, got shape {luma_native.shape}")
        pic = Picture(a, luma(a, self.settings.luma_coefficients),
                      float(pts) if pts is not None else float(wall_time),
                      source_size or self.source_size, luma_native)
        for d in self.detectors:
            pic.values.update(d.measure(pic))
        return pic.values
