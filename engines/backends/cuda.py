"""CUDA backend without TensorRT: fp16 weights, torch.compile, CUDA graphs per batch size.

Batches are padded up to a fixed ladder of sizes (1, 2, 4, 8, … up to ``max_batch``) so the
compiled graphs (``mode="reduce-overhead"`` records one CUDA graph per shape) are reused
instead of recompiled for every odd batch.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from .base import Backend, BackendOptions, BackendUnavailable

if TYPE_CHECKING:
    import torch

    from ..models.base import QualityModel

log = logging.getLogger(__name__)


class CUDAOptions(BackendOptions):
    backend: Literal["cuda"] = "cuda"
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    compile: bool = Field(True, description="torch.compile with CUDA graphs; false: eager")
    device: str = Field("cuda", description="torch device, e.g. cuda:1")

    def create(self, model: QualityModel, max_batch: int | None) -> CUDABackend:
        return CUDABackend(model, max_batch, self)


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

    def __init__(self, model: QualityModel, max_batch: int | None = None, options: CUDAOptions = CUDAOptions()):
        import torch

        super().__init__(model, max_batch)
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        self.device = torch.device(options.device)
        self.dtype = getattr(torch, options.dtype)
        self.model = self.model.to(self.device, self.dtype)
        self.ladder = batch_ladder(self.max_batch)
        self.compiled = options.compile
        self.runner = (torch.compile(self.model, mode="reduce-overhead", dynamic=False)
                       if options.compile else self.model)

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch

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
        import torch

        gpu = torch.cuda.get_device_name(self.device)
        mode = "compiled+cudagraphs" if self.compiled else "eager"
        return f"cuda ({gpu}, {str(self.dtype).removeprefix('torch.')}, {mode})"
