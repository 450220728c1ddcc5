"""TensorRT backend: torch-tensorrt dynamo compile, fp16, dynamic batch, cached engines.

Engines are tied to the GPU architecture and TensorRT version, so the on-disk cache key holds
the GPU model and compute capability, TensorRT and torch-tensorrt versions, the weights
fingerprint, the input shape and the batch profile. A fresh engine must match fp32 torch on the
calibration set (``parity.check_parity``) before it is used or cached.

``torch_tensorrt`` is imported only here and only when this backend is asked for; when it is
missing (``import torch_tensorrt`` raises a bare ``Exception`` without TensorRT) the error
becomes ``BackendUnavailable`` with the reason, and ``auto`` falls back to CUDA.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from .base import Backend, BackendOptions, BackendUnavailable
from .cache import cache_dir, cache_key, torch_version, weights_fingerprint

if TYPE_CHECKING:
    import torch

    from ..models.base import QualityModel

log = logging.getLogger(__name__)


class TensorRTOptions(BackendOptions):
    backend: Literal["tensorrt"] = "tensorrt"
    min_batch: int = Field(1, ge=1, description="smallest batch of the engine's profile")
    opt_batch: int | None = Field(None, ge=1, description="batch the engine is tuned for; null: max_batch")
    parity_tolerance: float = Field(1.0, gt=0, description="score points a fresh engine may differ from fp32 torch")

    def create(self, model: QualityModel, max_batch: int | None) -> TensorRTBackend:
        return TensorRTBackend(model, max_batch, self)


def import_torch_tensorrt():
    try:
        import torch_tensorrt  # noqa: F401  (raises plain Exception when TensorRT is absent)
        import tensorrt
    except Exception as e:  # noqa: BLE001 — any failure here means "no TensorRT"
        raise BackendUnavailable(
            f"torch-tensorrt/TensorRT not importable ({type(e).__name__}: {e}); "
            "use NVIDIA's PyTorch container (deploy/docker/Dockerfile.gpu) for TensorRT") from None
    return torch_tensorrt, tensorrt


def engine_key_fields(model: QualityModel, min_batch: int, opt_batch: int, max_batch: int,
                      trt_version: str, ttrt_version: str, device: int = 0) -> dict:
    import torch

    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "cc": f"{props.major}.{props.minor}", "tensorrt": trt_version,
            "torch_tensorrt": ttrt_version, "torch": torch_version(), "model": model.name,
            "weights": weights_fingerprint(model),
            "input": [3, model.input_size, model.input_size],
            "batch": [min_batch, opt_batch, max_batch], "precision": "fp16"}


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: QualityModel, max_batch: int | None = None,
                 options: TensorRTOptions = TensorRTOptions()):
        import torch

        super().__init__(model, max_batch)
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        self.device = torch.device("cuda")  # where inputs go: QualityEngine preprocesses there
        self.ttrt, trt = import_torch_tensorrt()
        self.min_batch, self.opt_batch = options.min_batch, options.opt_batch or self.max_batch
        fields = engine_key_fields(model, self.min_batch, self.opt_batch, self.max_batch,
                                   trt.__version__, self.ttrt.__version__)
        self.key = cache_key(fields)
        self.path = cache_dir("tensorrt") / f"{model.name}-{self.key}.ep"
        if self.path.exists():
            log.info("loading cached TensorRT engine %s", self.path)
            self.module = torch.export.load(str(self.path)).module()
        else:
            self.module = self._build(fields, options.parity_tolerance)

    def _build(self, fields: dict, tolerance: float):
        import torch

        from .parity import ParityError, check_parity

        s = self.input_size
        shape = lambda b: (b, 3, s, s)  # noqa: E731
        gpu_model = copy.deepcopy(self.model).cuda().half().eval()
        example = torch.zeros(shape(self.opt_batch), device="cuda", dtype=torch.float16)
        log.info("building TensorRT engine for %s (batch %d..%d); minutes on first use",
                 self.model.name, self.min_batch, self.max_batch)
        trt_module = self.ttrt.compile(
            gpu_model, ir="dynamo",
            inputs=[self.ttrt.Input(min_shape=shape(self.min_batch), opt_shape=shape(self.opt_batch),
                                    max_shape=shape(self.max_batch), dtype=torch.float16)],
            enabled_precisions={torch.float16})
        self.module = trt_module
        try:
            diff = check_parity(copy.deepcopy(self.model), lambda x: self._run(x)[0], tolerance)
        except ParityError as e:
            raise BackendUnavailable(f"TensorRT engine failed its parity check: {e}") from None
        tmp = self.path.with_suffix(".tmp")
        self.ttrt.save(trt_module, str(tmp), output_format="exported_program", arg_inputs=[example])
        os.replace(tmp, self.path)
        self.path.with_suffix(".json").write_text(json.dumps({**fields, "parity_max_diff": diff}, indent=1))
        log.info("TensorRT engine cached at %s (parity max diff %.3f points)", self.path, diff)
        return trt_module

    def _run(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = x.shape[0]
        xd = x.to("cuda", torch.float16)
        if n < self.min_batch:
            xd = torch.cat([xd, xd.new_zeros((self.min_batch - n, *xd.shape[1:]))])
        with torch.inference_mode():
            scores, maps = self.module(xd)
        return scores[:n].float().cpu().numpy(), maps[:n].float().cpu().numpy()

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self._run(x)

    def describe(self) -> str:
        import torch

        return f"tensorrt ({torch.cuda.get_device_name()}, fp16, batch {self.min_batch}..{self.max_batch}, engine {Path(self.path).name})"
