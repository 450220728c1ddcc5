"""Turning frames of any shape and depth into model input.

Policy (one for training, scoring and monitoring, so what the model saw in training is what
it sees in service):

1. Convert to 8-bit RGB (``engines.images.to_rgb_uint8``, also what image files are read as):
   grayscale is replicated, alpha dropped, 16-bit scaled by 1/257, boolean/float inputs are
   refused (their range is ambiguous).
2. Resize the *whole* frame to the model's square input (default 384x384) with antialiased
   bilinear filtering. No crops, no tiles: every pixel contributes and the region map maps
   back onto the full frame by proportional scaling (``RegionMap.cell_box``). Aspect ratio
   is not kept; the models were trained the same way, so the squeeze is part of what they
   learned. Tiny frames are upscaled; frames under 8x8 are refused as carrying no picture.
3. Scale to [0, 1] and normalise with the ImageNet mean/std of the backbone.

Two implementations of steps 2-3 share ``unit_float`` (the one resize rule): ``prepare_batch``
runs on the CPU and returns float32 (training, evaluation, parity, the CPU backend);
``DeviceBatcher`` packs the uint8 frames into one reused (pinned, on CUDA) host buffer, uploads
that with one non-blocking copy and does steps 2-3 on the backend's device: 4x fewer bytes over
PCIe than a float batch, and the resize runs on the GPU.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import normalize
from .images import FrameError, to_rgb_uint8

DEFAULT_INPUT_SIZE = 384


def unit_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B,3,H,W) uint8 on any device -> (B,3,size,size) float32 in [0,1], antialiased bilinear.

    The resize rule of training and serving: float first, then resize (antialias needs float
    on CUDA), no resize when the frame already has the model's size (the monitor's workers
    send SxS frames resized by swscale).
    """
    x = x.float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0.0, 1.0)


def resize_uint8(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H,W,3) uint8 -> (3,size,size) float in [0,1], antialiased bilinear."""
    return unit_float(torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0), size).squeeze(0)


def prepare_batch(frames: Sequence[np.ndarray], size: int = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """Frames -> normalised model input (B,3,size,size) float32."""
    if not frames:
        raise FrameError("empty batch")
    x = torch.stack([resize_uint8(to_rgb_uint8(f), size) for f in frames])
    return normalize(x)


class DeviceBatcher:
    """Frames -> normalised model input (B,3,size,size) float32 on ``device``.

    The frames' uint8 RGB bytes are packed back to back into one host buffer (page-locked when
    ``device`` is CUDA, so the copy is a real asynchronous DMA) that is kept and reused; it
    grows when a batch needs more. One ``non_blocking`` upload, then per group of same-sized
    frames one ``unit_float`` (resize only when needed) and one ``normalize`` on the device.
    On a CPU device the same code runs without pinning or upload (what the tests exercise).

    Thread-safe (one lock): the buffer is not refilled before the previous upload finished.
    """

    def __init__(self, device: str | torch.device = "cpu", size: int = DEFAULT_INPUT_SIZE):
        self.device = torch.device(device)
        self.size = size
        self.pinned = self.device.type == "cuda"
        if self.pinned and not torch.cuda.is_available():
            raise RuntimeError(f"DeviceBatcher on {self.device}: torch sees no CUDA device")
        self.host = torch.empty(0, dtype=torch.uint8)
        self._uploaded = None  # CUDA event recorded after the last upload from ``host``
        self._lock = threading.Lock()

    def _reserve(self, nbytes: int) -> torch.Tensor:
        if nbytes > self.host.numel():
            # round up to 1 MiB so a slightly larger batch next time does not reallocate
            cap = -(-nbytes // (1 << 20)) * (1 << 20)
            self.host = torch.empty(cap, dtype=torch.uint8, pin_memory=self.pinned)
        return self.host

    def __call__(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        if not frames:
            raise FrameError("empty batch")
        rgbs = [to_rgb_uint8(f) for f in frames]
        # frames of one shape are packed next to each other, so each group is one view on the
        # device; the monitor's batches (all SxS) are a single group: no resize, no gather
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(rgbs):
            groups.setdefault(r.shape, []).append(i)
        total = sum(r.size for r in rgbs)
        with self._lock:
            if self._uploaded is not None:
                self._uploaded.synchronize()  # the previous batch's DMA may still read ``host``
            host = self._reserve(total)
            flat, pos, spans = host.numpy(), 0, []
            for shape, idx in groups.items():
                start = pos
                for i in idx:
                    flat[pos:pos + rgbs[i].size] = rgbs[i].reshape(-1)
                    pos += rgbs[i].size
                spans.append((shape, idx, start, pos))
            dev = host[:total].to(self.device, non_blocking=True)
            if self.pinned:
                self._uploaded = torch.cuda.Event()
                self._uploaded.record(torch.cuda.current_stream(self.device))
            # on a CPU device ``dev`` *is* the buffer: convert before another call refills it.
            # NCHW-contiguous like prepare_batch's output (compiled graphs guard on strides; a
            # channels-last input would recompile them), transposed while still uint8 (4x fewer bytes)
            parts = [(idx, unit_float(dev[a:b].view(len(idx), *shape).permute(0, 3, 1, 2).contiguous(),
                                      self.size)) for shape, idx, a, b in spans]
        if len(parts) == 1:
            return normalize(parts[0][1])
        out = torch.empty((len(rgbs), 3, self.size, self.size), device=self.device)
        for idx, x in parts:
            out[idx] = x
        return normalize(out)

    def describe(self) -> str:
        return f"{self.device.type} ({'pinned ' if self.pinned else ''}uint8 upload)"
