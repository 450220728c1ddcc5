"""What an engine returns for one frame: a score and a region map."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# where frames become the model's input (QualityEngine): the backend's device, the host, or the device
Preprocess = Literal["auto", "host", "device"]


@dataclass(frozen=True)
class RegionMap:
    """A coarse grid of local quality (0-100, higher is better) over a whole frame.

    The model sees the frame resized as a whole (see ``engines.preprocess``), so cell
    ``(r, c)`` of a ``rows x cols`` map covers the frame rectangle
    ``[r*H/rows, (r+1)*H/rows) x [c*W/cols, (c+1)*W/cols)`` of the original ``H x W`` frame.
    """

    values: np.ndarray  # float32, (rows, cols)
    frame_height: int
    frame_width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Frame pixel box ``(x0, y0, x1, y1)`` (end-exclusive) covered by one cell."""
        rows, cols = self.shape
        y0 = round(row * self.frame_height / rows)
        y1 = round((row + 1) * self.frame_height / rows)
        x0 = round(col * self.frame_width / cols)
        x1 = round((col + 1) * self.frame_width / cols)
        return x0, y0, x1, y1

    def worst(self, k: int = 1) -> list[tuple[int, int, float]]:
        """The ``k`` lowest-scoring cells as ``(row, col, score)``, worst first."""
        flat = self.values.ravel()
        k = min(k, flat.size)
        idx = np.argsort(flat, kind="stable")[:k]
        cols = self.shape[1]
        return [(int(i // cols), int(i % cols), float(flat[i])) for i in idx]

    def to_frame(self) -> np.ndarray:
        """The map expanded to the frame's size (nearest cell), for overlays."""
        rows, cols = self.shape
        # same cell edges as cell_box, so overlays and boxes agree to the pixel
        r_edges = [self.cell_box(r, 0)[1] for r in range(1, rows)]
        c_edges = [self.cell_box(0, c)[0] for c in range(1, cols)]
        r_idx = np.searchsorted(r_edges, np.arange(self.frame_height), side="right")
        c_idx = np.searchsorted(c_edges, np.arange(self.frame_width), side="right")
        return self.values[r_idx][:, c_idx]


@dataclass(frozen=True)
class Prediction:
    score: float
    region_map: RegionMap
