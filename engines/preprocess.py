"""Turning frames of any shape and depth into model input.

Policy (one for training, scoring and monitoring, so what the model saw in training is what
it sees in service):

1. Convert to 8-bit RGB: grayscale is replicated, alpha dropped, 16-bit scaled by 1/257,
   boolean/float inputs are refused (their range is ambiguous).
2. Resize the *whole* frame to the model's square input (default 384x384) with antialiased
   bilinear filtering. No crops, no tiles: every pixel contributes and the region map maps
   back onto the full frame by proportional scaling (``RegionMap.cell_box``). Aspect ratio
   is not kept; the models were trained the same way, so the squeeze is part of what they
   learned. Tiny frames are upscaled; frames under 8x8 are refused as carrying no picture.
3. Scale to [0, 1] and normalise with the ImageNet mean/std of the backbone.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import normalize

DEFAULT_INPUT_SIZE = 384
MIN_SIDE = 8


class FrameError(ValueError):
    """A frame that cannot be scored, with the reason."""


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


def resize_uint8(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H,W,3) uint8 -> (3,size,size) float in [0,1], antialiased bilinear."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.squeeze(0).clamp_(0.0, 1.0)


def prepare_batch(frames: Sequence[np.ndarray], size: int = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """Frames -> normalised model input (B,3,size,size) float32."""
    if not frames:
        raise FrameError("empty batch")
    x = torch.stack([resize_uint8(to_rgb_uint8(f), size) for f in frames])
    return normalize(x)
