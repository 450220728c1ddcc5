"""A scored frame with its region map drawn over it: heatmap cells, the worst cells outlined.

The sampled frame the model saw is square (the whole picture resized, see
``engines.preprocess``); it is resized back to the original aspect ratio here, and the map's
cells are laid over it with the same edges as ``RegionMap.cell_box`` (nearest cell, no
smoothing: the grid is what the model measured).
"""
from __future__ import annotations

import io

import numpy as np

from engines.types import RegionMap

COLORMAP = "RdYlGn"         # red = poor, green = good, over the 0-100 score scale
ALPHA = 0.4                 # heatmap opacity: the picture stays readable under it
OUTLINE = (255, 255, 255)   # worst cell, with a dark edge so it shows on bright pictures too


def overlay_image(image: np.ndarray, values: np.ndarray, frame_size: tuple[int, int], width: int = 480,
                  outlined: int = 1):
    """PIL image ``width`` pixels wide with the frame's aspect ratio; ``values`` is the map (rows, cols);
    the ``outlined`` lowest cells are framed."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    fw, fh = frame_size
    height = max(2, round(width * fh / max(1, fw)))
    picture = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((width, height), Image.BILINEAR),
                         dtype=np.float32)
    rm = RegionMap(np.asarray(values, dtype=np.float32), height, width)
    heat = colormaps[COLORMAP](np.clip(rm.to_frame() / 100.0, 0.0, 1.0))[..., :3] * 255.0
    out = Image.fromarray((picture * (1.0 - ALPHA) + heat * ALPHA).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for row, col, _ in rm.worst(outlined):
        x0, y0, x1, y1 = rm.cell_box(row, col)
        draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=(0, 0, 0), width=1)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=OUTLINE, width=2)
        draw.rectangle((x0 + 2, y0 + 2, x1 - 3, y1 - 3), outline=(0, 0, 0), width=1)
    return out


def overlay_jpeg(image: np.ndarray, values: np.ndarray, frame_size: tuple[int, int], width: int = 480,
                 quality: int = 80, outlined: int = 1) -> bytes:
    buf = io.BytesIO()
    overlay_image(image, values, frame_size, width, outlined).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
