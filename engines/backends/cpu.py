"""CPU backend: ONNX Runtime when installed (measured faster here), else torch eager.

``runtime``: ``"auto"`` (ONNX Runtime if importable, else torch), ``"onnxruntime"`` or
``"torch"``. The ONNX graph is exported once per (model, weights, input size, torch version)
and cached on disk. Both runtimes are held to the same outputs by the parity tests.
"""
from __future__ import annotations

import logging
import os
import warnings
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
ONNX_OPSET = 18


class CPUOptions(BackendOptions):
    backend: Literal["cpu"] = "cpu"
    runtime: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto", description="auto: ONNX Runtime when importable, else torch eager")
    threads: int | None = Field(None, ge=1, description="null: one per CPU core")

    def create(self, model: QualityModel, max_batch: int) -> CPUBackend:
        return CPUBackend(model, max_batch, self)


def export_onnx(model: QualityModel, path: Path, input_size: int) -> Path:
    """Export ``model`` with a dynamic batch axis; written atomically."""
    import torch

    example = torch.zeros(2, 3, input_size, input_size)
    tmp = path.with_suffix(".tmp.onnx")
    # shapes are fixed except the batch: the tracer's "treated as a constant" notes are expected
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"],
                          output_names=["score", "map"], opset_version=ONNX_OPSET,
                          dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"},
                                        "map": {0: "batch"}}, dynamo=False)
    os.replace(tmp, path)
    return path


class CPUBackend(Backend):
    name = "cpu"

    def __init__(self, model: QualityModel, max_batch: int = 8, options: CPUOptions = CPUOptions()):
        import torch

        super().__init__(model, max_batch)
        self.threads = options.threads or os.cpu_count() or 1
        self.session = None
        if options.runtime in ("auto", "onnxruntime"):
            try:
                self.session = self._onnx_session()
            except ImportError as e:
                if options.runtime == "onnxruntime":
                    raise BackendUnavailable(f"onnxruntime is not installed: {e}") from None
                log.info("onnxruntime not importable (%s); using torch eager", e)
        self.runtime = "onnxruntime" if self.session is not None else "torch"
        if self.runtime == "torch":
            torch.set_num_threads(self.threads)

    def _onnx_session(self):
        import onnxruntime as ort

        key = cache_key({"model": self.model.name, "weights": weights_fingerprint(self.model),
                         "size": self.input_size, "torch": torch_version(), "opset": ONNX_OPSET})
        path = cache_dir("onnx") / f"{self.model.name}-{key}.onnx"
        if not path.exists():
            log.info("exporting %s to ONNX (%s), once per weights/version", self.model.name, path)
            export_onnx(self.model, path, self.input_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self.session is not None:
            scores, maps = self.session.run(None, {"image": x.float().contiguous().numpy()})
            return scores.astype(np.float32), maps.astype(np.float32)
        with torch.inference_mode():
            scores, maps = self.model(x.float())
        return scores.numpy(), maps.numpy()

    def describe(self) -> str:
        return f"cpu ({self.runtime}, {self.threads} threads)"
