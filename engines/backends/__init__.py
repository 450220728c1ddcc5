"""Inference backends behind one interface, one file each, named in one registry.

``cpu`` (torch eager or ONNX Runtime), ``cuda`` (fp16, torch.compile, CUDA graphs),
``tensorrt`` (torch-tensorrt engine with an on-disk cache) and ``auto`` (the best one
available, logged with the reason). Each file holds the backend's options class and the backend;
``BACKENDS`` is the one list of names (the CLIs' choices, the configuration's union).

Adding a backend: a new file here with ``XOptions(BackendOptions)`` (``backend: Literal["x"]``,
``create``) and its ``Backend``, and one line in ``BACKENDS``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from ..registry import resolve
from .base import Backend, BackendOptions, BackendUnavailable

if TYPE_CHECKING:
    from ..models.base import QualityModel

# name -> its options class; importing them is light (no torch): the configuration does it
BACKENDS = {
    "cpu": "engines.backends.cpu:CPUOptions",
    "cuda": "engines.backends.cuda:CUDAOptions",
    "tensorrt": "engines.backends.tensorrt:TensorRTOptions",
    "auto": "engines.backends.auto:AutoOptions",
}


def backend_names() -> list[str]:
    return list(BACKENDS)


def options_class(name: str) -> type[BackendOptions]:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return resolve(BACKENDS[name])


def options_union():
    """Every backend's options as one pydantic union, told apart by ``backend``."""
    return Annotated[Union[tuple(options_class(name) for name in BACKENDS)],  # noqa: UP007
                     Field(discriminator="backend")]


def create_backend(backend: str | BackendOptions, model: QualityModel, max_batch: int | None = None,
                   **settings) -> Backend:
    """A backend by name with its ``settings`` (validated here), or from validated options."""
    if isinstance(backend, BackendOptions):
        if settings:
            raise TypeError("give settings either in the options or as keywords, not both")
        options = backend
    else:
        options = options_class(backend)(**settings)
    return options.create(model, max_batch)


__all__ = ["Backend", "BackendOptions", "BackendUnavailable", "BACKENDS", "backend_names",
           "create_backend", "options_class", "options_union"]
