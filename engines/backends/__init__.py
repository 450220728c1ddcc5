"""Inference backends behind one interface, one file each, imported lazily.

``create_backend(name, model)``: ``cpu`` (torch eager or ONNX Runtime), ``cuda`` (fp16,
torch.compile, CUDA graphs), ``tensorrt`` (torch-tensorrt engine with an on-disk cache) and
``auto`` (the best one available, logged with the reason).
"""
from __future__ import annotations

import importlib

from ..models.base import QualityModel
from .base import Backend, BackendUnavailable

BACKENDS = {
    "cpu": "engines.backends.cpu:CPUBackend",
    "cuda": "engines.backends.cuda:CUDABackend",
    "tensorrt": "engines.backends.tensorrt:TensorRTBackend",
    "auto": "engines.backends.auto:create_auto_backend",
}


def create_backend(name: str, model: QualityModel, **opts) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)(model, **opts)


__all__ = ["Backend", "BackendUnavailable", "create_backend", "BACKENDS"]
