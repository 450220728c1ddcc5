"""What the model sees of a frame: its *view* (one rule for training, scoring and monitoring).

Three input modes, recorded in each weights file (``input_mode``) and applied the same way in
training, ``vqmon score``/``eval`` and the monitor's workers:

- ``resize``: the whole frame squeezed to ``size`` x ``size`` (the old rule; detail is lost at
  1080p and the aspect ratio is not kept).
- ``fragments`` (after FAST-VQA, ECCV 2022): the frame, at its *working scale*, is cut into a
  ``grid`` x ``grid`` lattice of cells and one native ``patch`` x ``patch`` mini-patch is taken
  from each cell, spliced in cell order. With ``patch`` equal to the model's map stride (32),
  map cell (i, j) is the quality of frame cell (i, j): the region map still means "where in
  the frame", with boxes in frame pixels (``RegionMap.cell_box`` scales proportionally).
- ``crops``: native ``size`` x ``size`` crops of the working-scale frame (training and
  ``eval`` only: a crop's map covers only the crop).

The working scale is the frame shrunk so that its short side is at most ``WORK_SHORT_SIDE``
(never enlarged): the human-rated photos the models learn from are about 500 px, so 1080p and
4K frames are brought near that pixel scale (720p x0.75, 1080p x0.5, 4K x0.25) instead of the
5x squeeze of ``resize``.

Patch positions: the centre of each cell (``draw=None``: stable from frame to frame, what the
monitor uses) or a seeded random position inside each cell (training, and test-time draws).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_MODES = ("resize", "fragments", "crops")
WORK_SHORT_SIDE = 540
# views averaged per still image by `vqmon score`/`eval` (a resize model has one view)
DEFAULT_DRAWS = 5


@dataclass(frozen=True)
class InputView:
    """How a frame becomes a ``side`` x ``side`` uint8 model input."""

    mode: str = "fragments"
    grid: int = 7
    patch: int = 32
    size: int = 224  # resize and crops: the input side

    def __post_init__(self):
        if self.mode not in INPUT_MODES:
            raise ValueError(f"unknown input mode {self.mode!r}; one of {', '.join(INPUT_MODES)}")

    @property
    def side(self) -> int:
        return self.grid * self.patch if self.mode == "fragments" else self.size

    def to_meta(self) -> dict:
        return {"mode": self.mode, "grid": self.grid, "patch": self.patch, "size": self.size}

    @classmethod
    def from_meta(cls, meta: dict | None, default_size: int) -> InputView:
        if not meta:  # weights from before input modes: the whole frame resized
            return cls(mode="resize", size=default_size)
        return cls(**{k: meta[k] for k in ("mode", "grid", "patch", "size") if k in meta})

    def cell_map(self, maps: np.ndarray) -> np.ndarray:
        """Model maps ``(B, h, w)`` -> one value per frame cell: with fragments larger than the
        model's map stride, each patch's map cells are averaged into its frame cell."""
        g = self.grid
        if self.mode != "fragments" or maps.shape[-2:] == (g, g) or maps.shape[-1] % g or maps.shape[-2] % g:
            return maps
        k0, k1 = maps.shape[-2] // g, maps.shape[-1] // g
        return maps.reshape(*maps.shape[:-2], g, k0, g, k1).mean(axis=(-3, -1))

    def working_shape(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) of the working-scale frame; fragments never go below one patch per cell."""
        s = min(1.0, WORK_SHORT_SIDE / min(h, w))
        h2, w2 = max(1, round(h * s)), max(1, round(w * s))
        if self.mode == "fragments":
            need = self.side
            up = max(1.0, need / h2, need / w2)
            h2, w2 = round(h2 * up), round(w2 * up)
        elif self.mode == "crops":
            up = max(1.0, self.size / h2, self.size / w2)
            h2, w2 = round(h2 * up), round(w2 * up)
        return h2, w2

    def __call__(self, rgb: np.ndarray, draw: int | None = None) -> np.ndarray:
        """(H,W,3) uint8 -> (side, side, 3) uint8. ``resize`` returns the frame itself: the
        squeeze to ``size`` happens in float with the normalisation (``engines.preprocess``,
        on the GPU where the backend runs there), as it always has."""
        if self.mode == "resize":
            return rgb
        h, w = rgb.shape[:2]
        if (h, w) != self.working_shape(h, w):
            rgb = resize_rgb(rgb, *self.working_shape(h, w))
        rng = None if draw is None else np.random.default_rng(draw)
        if self.mode == "crops":
            return crop(rgb, self.size, rng)
        return fragments(rgb, self.grid, self.patch, rng)


def resize_rgb(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bilinear resize of (H,W,3) uint8 (the one resize rule of ``preprocess``)."""
    if rgb.shape[:2] == (h, w):
        return rgb
    import torch  # not at import time: the decoder workers use views on swscale-resized frames
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def cell_edges(length: int, grid: int) -> np.ndarray:
    """Integer cell boundaries of ``grid`` equal cells over ``length`` pixels (grid + 1 values)."""
    return np.round(np.linspace(0, length, grid + 1)).astype(int)


def fragments(rgb: np.ndarray, grid: int, patch: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One ``patch`` x ``patch`` native patch per cell of a ``grid`` x ``grid`` lattice, spliced."""
    h, w = rgb.shape[:2]
    if h < grid * patch or w < grid * patch:
        raise ValueError(f"frame {w}x{h} is smaller than {grid}x{grid} patches of {patch} px")
    ys, xs = cell_edges(h, grid), cell_edges(w, grid)
    out = np.empty((grid * patch, grid * patch, 3), dtype=np.uint8)
    for i in range(grid):
        for j in range(grid):
            y = _offset(ys[i], ys[i + 1], patch, rng)
            x = _offset(xs[j], xs[j + 1], patch, rng)
            out[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = rgb[y:y + patch, x:x + patch]
    return out


def _offset(lo: int, hi: int, patch: int, rng: np.random.Generator | None) -> int:
    room = hi - lo - patch
    if room <= 0:  # a cell narrower than the patch: centre the patch on the cell
        return int(np.clip((lo + hi - patch) // 2, 0, None))
    return lo + (int(rng.integers(0, room + 1)) if rng is not None else room // 2)


def crop(rgb: np.ndarray, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A ``size`` x ``size`` crop: random with ``rng``, else the centre."""
    h, w = rgb.shape[:2]
    y = int(rng.integers(0, h - size + 1)) if rng is not None else (h - size) // 2
    x = int(rng.integers(0, w - size + 1)) if rng is not None else (w - size) // 2
    return rgb[y:y + size, x:x + size]
