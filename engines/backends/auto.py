"""``auto``: the fastest backend that works here, with the reason logged."""
from __future__ import annotations

import logging

import torch

from ..models.base import QualityModel
from .base import Backend, BackendUnavailable

log = logging.getLogger(__name__)


def create_auto_backend(model: QualityModel, **opts) -> Backend:
    """TensorRT on a GPU when it imports, else CUDA fp16, else CPU."""
    reasons = []
    if torch.cuda.is_available():
        from .tensorrt import TensorRTBackend
        try:
            backend = TensorRTBackend(model, **opts)
            backend.choice_reason = "GPU present and TensorRT importable"
            log.info("backend auto -> tensorrt: %s", backend.choice_reason)
            return backend
        except BackendUnavailable as e:
            reasons.append(f"tensorrt unavailable ({e})")
        from .cuda import CUDABackend
        backend = CUDABackend(model, **opts)
        backend.choice_reason = "; ".join(reasons) or "GPU present"
        log.warning("backend auto -> cuda: %s", backend.choice_reason)
        return backend
    from .cpu import CPUBackend
    backend = CPUBackend(model, **{k: v for k, v in opts.items() if k in ("max_batch", "runtime", "threads")})
    backend.choice_reason = "no CUDA GPU visible to torch"
    log.info("backend auto -> %s: %s", backend.describe(), backend.choice_reason)
    return backend
