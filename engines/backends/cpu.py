"""CPU backend: ONNX Runtime when installed (measured faster here), else torch eager.

``runtime``: ``"auto"`` (ONNX Runtime if importable, else torch), ``"onnxruntime"`` or
``"torch"``. The ONNX graph is exported once per (model, weights, input size, torch version)
and cached on disk. Both runtimes are held to the same outputs by the parity tests.

``precision: int8`` runs the shipped statically quantised graph ``engines/weights/<model>.int8.onnx``
(made and measured by ``python -m engines.quantize``, docs/int8.md) when its record says it
passed acceptance and was made from the very weights and input size loaded; otherwise the
backend runs fp32 and says why in ``describe()``.
"""
from __future__ import annotations

import json
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
    parallel: int | None = Field(
        None, ge=1, le=64, description="batches scored at once, each from its own scorer thread on "
        "`threads` threads; null: one per CPU core in the monitor, 1 where one caller scores "
        "(report, score, eval). Small batches side by side beat one large batch on all cores "
        "(cache): 41 against 26 images/s on 2 cores (docs/performance.md)")
    threads: int | None = Field(None, ge=1, description="threads per batch; null: 1 when batches "
                                "run side by side (parallel > 1), else one per CPU core")
    spin: bool = Field(False, description="ONNX Runtime's idle worker threads spin-wait for "
                       "work; off by default: faster alone (docs/int8.md), but spinning threads "
                       "burn the cores the decoder workers need")
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="int8: the shipped quantised graph (ONNX Runtime only; fp32, saying "
        "why, when it is missing, failed acceptance or was made for other weights)")

    def create(self, model: QualityModel, max_batch: int | None) -> CPUBackend:
        return CPUBackend(model, max_batch, self)

    def for_many_callers(self) -> CPUOptions:
        return self if self.parallel else self.model_copy(update={"parallel": os.cpu_count() or 1})


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


def int8_files(model_name: str) -> tuple[Path, Path]:
    """The shipped int8 graph of ``model_name`` and its record (``engines.quantize`` writes both)."""
    from ..models import SHIPPED_WEIGHTS_DIR

    return (SHIPPED_WEIGHTS_DIR / f"{model_name}.int8.onnx",
            SHIPPED_WEIGHTS_DIR / f"{model_name}.int8.json")


def int8_refusal(model: QualityModel) -> str | None:
    """Why the shipped int8 graph may not stand in for ``model``; None when it may."""
    graph, record_path = int8_files(model.name)
    if not record_path.is_file() or not graph.is_file():
        return "no int8 file is shipped for this model"
    record = json.loads(record_path.read_text())
    if not record.get("accepted"):
        return f"the int8 file failed its acceptance test ({record.get('reason')})"
    if record.get("weights_fingerprint") != weights_fingerprint(model):
        return "the int8 file was made for other weights"
    if record.get("input_size") != model.input_size:
        return f"the int8 file takes {record.get('input_size')} px input, the model {model.input_size}"
    return None


def session_options(threads: int, spin: bool = False):
    """ONNX Runtime settings of the backend (also used by the quantiser and the bench)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    flag = "1" if spin else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return opts


class CPUBackend(Backend):
    name = "cpu"

    def __init__(self, model: QualityModel, max_batch: int | None = None, options: CPUOptions = CPUOptions()):
        import torch

        cores = os.cpu_count() or 1
        self.parallel = options.parallel or 1
        self.threads = options.threads or (1 if self.parallel > 1 else cores)
        # unless configured: batches of 1 side by side, 2 on all cores (measured fastest per image)
        super().__init__(model, max_batch or (1 if self.parallel > 1 else 2))
        self.spin = options.spin
        self.precision = "fp32"
        self.int8_unused: str | None = None  # why int8 was asked for and is not running
        self.session = None
        if options.runtime in ("auto", "onnxruntime"):
            try:
                self.session = self._onnx_session(int8=options.precision == "int8")
            except ImportError as e:
                if options.runtime == "onnxruntime":
                    raise BackendUnavailable(f"onnxruntime is not installed: {e}") from None
                log.info("onnxruntime not importable (%s); using torch eager", e)
        self.runtime = "onnxruntime" if self.session is not None else "torch"
        if self.runtime == "torch":
            torch.set_num_threads(self.threads)
            if options.precision == "int8":
                self.int8_unused = "int8 runs only on ONNX Runtime"
        if self.int8_unused:
            log.warning("%s: int8 not used, running fp32: %s", model.name, self.int8_unused)

    def _onnx_session(self, int8: bool):
        import onnxruntime as ort

        if int8:
            self.int8_unused = int8_refusal(self.model)
        if int8 and self.int8_unused is None:
            path, self.precision = int8_files(self.model.name)[0], "int8"
        else:
            key = cache_key({"model": self.model.name, "weights": weights_fingerprint(self.model),
                             "size": self.input_size, "torch": torch_version(), "opset": ONNX_OPSET})
            path = cache_dir("onnx") / f"{self.model.name}-{key}.onnx"
            if not path.exists():
                log.info("exporting %s to ONNX (%s), once per weights/version", self.model.name, path)
                export_onnx(self.model, path, self.input_size)
        return ort.InferenceSession(str(path), session_options(self.threads, self.spin),
                                    providers=["CPUExecutionProvider"])

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self.session is not None:
            scores, maps = self.session.run(None, {"image": x.float().contiguous().numpy()})
            return scores.astype(np.float32), maps.astype(np.float32)
        with torch.inference_mode():
            scores, maps = self.model(x.float())
        return scores.numpy(), maps.numpy()

    def describe(self) -> str:
        spin = ", spinning" if self.spin and self.runtime == "onnxruntime" else ""
        unused = f"; int8 not used: {self.int8_unused}" if self.int8_unused else ""
        side = f"{self.parallel} batches at once x " if self.parallel > 1 else ""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"cpu ({self.runtime} {self.precision}, {side}{threads}{spin}{unused})"
