"""Image files and arrays as the models take them: 8-bit RGB (step 1 of ``engines.preprocess``).

The one image reader of the monitor (``vqmon score``), training and evaluation. Light (numpy,
PIL on first read): the monitor's processes use it without torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_SIDE = 8


class FrameError(ValueError):
    """A frame that cannot be scored, with the reason."""


class ImageReadError(ValueError):
    """An image file that cannot be decoded, with the reason."""


def to_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """Any supported array (H,W), (H,W,1|3|4) of uint8/uint16 as contiguous (H,W,3) uint8."""
    a = np.asarray(frame)
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        a = a.astype(np.uint8)
    elif a.dtype != np.uint8:
        raise FrameError(f"frame dtype {a.dtype} not supported: pass uint8 or uint16 pixels")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise FrameError(f"frame must be HxW or HxWxC, got shape {a.shape}")
    channels = a.shape[2]
    if channels == 1:
        a = np.repeat(a, 3, axis=2)
    elif channels == 4:
        a = a[:, :, :3]
    elif channels != 3:
        raise FrameError(f"frame has {channels} channels; expected 1, 3 or 4")
    if min(a.shape[:2]) < MIN_SIDE:
        raise FrameError(f"frame {a.shape[1]}x{a.shape[0]} is smaller than {MIN_SIDE}x{MIN_SIDE}")
    # torch refuses read-only memory (e.g. PIL's arrays); copy only then
    return np.ascontiguousarray(a) if a.flags.writeable else np.array(a, order="C")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into uint8/uint16 (H,W[,C]) keeping its bit depth and alpha."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(img, dtype=np.uint16) if img.mode != "I" else \
                    np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image: {e}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, converted as every frame is (``to_rgb_uint8``)."""
    return to_rgb_uint8(read_image(path))
