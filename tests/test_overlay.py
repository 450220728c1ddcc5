"""The region-map overlay frames exactly the requested number of lowest cells."""
from __future__ import annotations

import numpy as np

from engines.types import RegionMap
from monitor.overlay import overlay_image


def _white_edge(img: np.ndarray, box) -> bool:
    x0, y0, x1, y1 = box
    top = img[y0, x0 + 3:x1 - 3]
    return bool((top >= 250).all())


def test_outlines_the_lowest_cells_only():
    values = np.full((12, 12), 80.0, dtype=np.float32)
    lows = [(1, 2), (6, 9), (10, 4)]
    for i, (r, c) in enumerate(lows):
        values[r, c] = 5.0 + i
    frame = np.full((384, 384, 3), 60, np.uint8)          # mid-grey: no white anywhere by itself
    w, h = 480, 270
    rm = RegionMap(values, h, w)
    one = np.asarray(overlay_image(frame, values, (1920, 1080), width=w, outlined=1))
    three = np.asarray(overlay_image(frame, values, (1920, 1080), width=w, outlined=3))
    assert one.shape == (h, w, 3)
    boxes = [rm.cell_box(r, c) for r, c in lows]
    assert [_white_edge(one, b) for b in boxes] == [True, False, False]
    assert [_white_edge(three, b) for b in boxes] == [True, True, True]
    assert not _white_edge(three, rm.cell_box(0, 0))
