"""``auto``: the fastest backend that works here, with the reason logged.

Its options hold a section per backend it may pick (``cpu``, ``cuda``, ``tensorrt``); the
picked one runs with its own section.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from .base import Backend, BackendOptions, BackendUnavailable
from .cpu import CPUOptions
from .cuda import CUDAOptions
from .tensorrt import TensorRTOptions

if TYPE_CHECKING:
    from ..models.base import QualityModel

log = logging.getLogger(__name__)


class AutoOptions(BackendOptions):
    backend: Literal["auto"] = "auto"
    cpu: CPUOptions = CPUOptions()
    cuda: CUDAOptions = CUDAOptions()
    tensorrt: TensorRTOptions = TensorRTOptions()

    def for_many_callers(self) -> AutoOptions:
        return self.model_copy(update={"cpu": self.cpu.for_many_callers(), "cuda": self.cuda.for_many_callers(),
                                       "tensorrt": self.tensorrt.for_many_callers()})

    def create(self, model: QualityModel, max_batch: int | None) -> Backend:
        """TensorRT on a GPU when it imports, else CUDA fp16, else CPU."""
        import torch

        if torch.cuda.is_available():
            try:
                backend = self.tensorrt.create(model, max_batch)
                backend.choice_reason = "GPU present and TensorRT importable"
                log.info("backend auto -> tensorrt: %s", backend.choice_reason)
                return backend
            except BackendUnavailable as e:
                reason = f"tensorrt unavailable ({e})"
            backend = self.cuda.create(model, max_batch)
            backend.choice_reason = reason
            log.warning("backend auto -> cuda: %s", backend.choice_reason)
            return backend
        backend = self.cpu.create(model, max_batch)
        backend.choice_reason = "no CUDA GPU visible to torch"
        log.info("backend auto -> %s: %s", backend.describe(), backend.choice_reason)
        return backend
