"""CUDA backend without TensorRT: fp16 weights, torch.compile, CUDA graphs per batch size.

Batches are padded up to a fixed ladder of sizes (1, 2, 4, 8, … up to ``max_batch``) so the
compiled graphs (``mode="reduce-overhead"`` records one CUDA graph per shape) are reused
instead of recompiled for every odd batch.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..models.base import QualityModel
from .base import Backend, BackendUnavailable

log = logging.getLogger(__name__)


def batch_ladder(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def padded_size(n: int, ladder: list[int]) -> int:
    return next(b for b in ladder if b >= n)


class CUDABackend(Backend):
    name = "cuda"

    def __init__(self, model: QualityModel, max_batch: int = 8, dtype: str = "float16",
                 compile: bool = True, device: str = "cuda", **_ignored):
        super().__init__(model, max_batch)
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        self.device = torch.device(device)
        self.dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                      "float32": torch.float32}[dtype]
        self.model = self.model.to(self.device, self.dtype)
        self.ladder = batch_ladder(max_batch)
        self.compiled = compile
        self.runner = torch.compile(self.model, mode="reduce-overhead", dynamic=False) if compile else self.model

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        b = padded_size(n, self.ladder)
        xd = x.to(self.device, non_blocking=True).to(self.dtype)
        if b > n:
            xd = torch.cat([xd, xd.new_zeros((b - n, *xd.shape[1:]))])
        with torch.inference_mode():
            scores, maps = self.runner(xd)
            scores, maps = scores[:n].float().cpu(), maps[:n].float().cpu()
        return scores.numpy(), maps.numpy()

    def describe(self) -> str:
        gpu = torch.cuda.get_device_name(self.device)
        mode = "compiled+cudagraphs" if self.compiled else "eager"
        return f"cuda ({gpu}, {str(self.dtype).removeprefix('torch.')}, {mode})"
