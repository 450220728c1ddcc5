"""CPU throughput of both quality models beside the bare backbone, measured in one run.

    python bench/engine.py [--size 384] [--batches 1 8] [--seconds 3]

Prints images/s for the bare Lite0 features and for each model, in torch eager and in ONNX
Runtime (the CPU backend's default), at each batch size, with each model's speed relative to
the bare backbone in the same runtime (1.0 = free; 0.8 = the model takes 1.25x the time).
Re-runs itself under jemalloc when installed, like the CLI (VQMON_JEMALLOC=0 disables).

    python bench/engine.py --matrix [--models bifusion] [--size 384] [--precision fp32 int8]
        [--threads 1 2] [--spin off on] [--batches 1 8] [--rounds 5] [--seconds 1]

The ``cpu`` backend on ONNX Runtime in every combination of precision, threads, spinning and
batch, interleaved: each round times every case once, the table gives each case's median
over the rounds (docs/int8.md). int8 at the shipped weights' size runs the shipped graph
(``precision: int8``); at any other size the weights are random and the bench quantises them
itself (random calibration data: for speed only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import images_per_second  # noqa: E402

from engines import create_model, list_models  # noqa: E402
from engines.backbone import load_pretrained_backbone  # noqa: E402
from engines.backends.cpu import CPUBackend, CPUOptions  # noqa: E402
from monitor.jemalloc import reexec_with_jemalloc  # noqa: E402


class BackboneFeatures(torch.nn.Module):
    """The bare backbone as one graph: every tap the models read, for a fair ORT baseline."""

    def __init__(self):
        super().__init__()
        self.backbone = load_pretrained_backbone(drop_classifier=True)

    def forward(self, x):
        return tuple(self.backbone.forward_features(x, with_head=True).values())


def backbone_ort_session(size: int, path: Path):
    import onnxruntime as ort

    with torch.no_grad():
        torch.onnx.export(BackboneFeatures().eval(), (torch.zeros(2, 3, size, size),), str(path),
                          input_names=["image"], dynamic_axes={"image": {0: "batch"}},
                          opset_version=18, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_int8_session(model, size: int, threads: int, spin: bool, tmp: Path):
    """An int8 graph of ``model`` at ``size`` quantised as the shipped one was (its record's
    settings), calibrated on random data (speed only)."""
    import onnxruntime as ort

    from engines.backends.cpu import int8_files, session_options
    from engines.quantize import export_fp32, quantize

    path = tmp / f"{model.name}-{size}.int8.onnx"
    if not path.exists():
        raw, pre = tmp / "raw.onnx", tmp / "pre.onnx"
        export_fp32(model, size, raw, pre)
        calib = np.random.default_rng(0).standard_normal((8, 3, size, size), dtype=np.float32)
        shipped = json.loads(int8_files(model.name)[1].read_text())["quantization"]
        quantize(pre, path, calib, {k: shipped[k] for k in ("calibrate", "exclude")})
    return ort.InferenceSession(str(path), session_options(threads, spin),
                                providers=["CPUExecutionProvider"])


def matrix(args) -> None:
    """Every case of the ``cpu`` backend, interleaved round by round; medians."""
    tmp = Path(tempfile.mkdtemp())
    cases = {}
    for name in args.models or ["bifusion"]:
        model = create_model(name, weights="default")
        if model.input_size != args.size:  # random weights at another size: speed only
            model = create_model(name, weights=None)
            model.input_size = args.size
        for precision in args.precision:
            for threads in args.threads:
                for spin in args.spin:
                    backend = CPUBackend(model, max(args.batches), CPUOptions(
                        runtime="onnxruntime", threads=threads, spin=spin == "on", precision=precision))
                    if precision == "int8" and backend.precision != "int8":
                        if model.trained:
                            raise SystemExit(f"int8 not used: {backend.int8_unused}")
                        backend.session = bench_int8_session(model, args.size, threads, spin == "on", tmp)
                        backend.precision = "int8 (bench-made)"
                    for b in args.batches:
                        cases[(name, precision, threads, spin, b)] = backend
    xs = {b: torch.randn(b, 3, args.size, args.size) for b in args.batches}
    runs = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, backend in cases.items():
            b = key[-1]
            r = images_per_second(lambda: backend.infer(xs[b]), b, repeats=1, min_seconds=args.seconds)
            runs[key].append(r["images_per_s"])
    print(f"# {args.size}x{args.size}, cpu backend (onnxruntime), median of {args.rounds} interleaved "
          f"rounds of {args.seconds:g} s, jemalloc={'yes' if 'jemalloc' in os.environ.get('LD_PRELOAD', '') else 'no'}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")
    print(f"{'model':10} {'weights':8} {'precision':18} {'threads':>7} {'spin':>4} {'batch':>5} "
          f"{'img/s':>7} {'min':>7} {'max':>7}")
    for (name, precision, threads, spin, b), values in runs.items():
        backend = cases[(name, precision, threads, spin, b)]
        print(f"{name:10} {'shipped' if backend.model.trained else 'random':8} {backend.precision:18} "
              f"{threads:>7} {spin:>4} {b:>5} {statistics.median(values):>7.1f} {min(values):>7.1f} "
              f"{max(values):>7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--matrix", action="store_true", help="the cpu backend's cases, interleaved")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spin", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    reexec_with_jemalloc([str(Path(__file__).resolve()), *sys.argv[1:]])
    if args.matrix:
        return matrix(args)
    torch.set_num_threads(os.cpu_count() or 1)
    jemalloc = "jemalloc" in os.environ.get("LD_PRELOAD", "")
    rows = []
    backbone = load_pretrained_backbone(drop_classifier=True)
    tmp = tempfile.TemporaryDirectory()
    session = backbone_ort_session(args.size, Path(tmp.name) / "backbone.onnx")
    for b in args.batches:
        x = torch.randn(b, 3, args.size, args.size)

        def bare():
            with torch.inference_mode():
                backbone.forward_features(x, with_head=True)
        base = images_per_second(bare, b, min_seconds=args.seconds)
        rows.append({"what": "backbone", "runtime": "torch", **base, "ratio": 1.0})
        xn = x.numpy()
        base_ort = images_per_second(lambda: session.run(None, {"image": xn}), b, min_seconds=args.seconds)
        rows.append({"what": "backbone", "runtime": "onnxruntime", **base_ort, "ratio": 1.0})
        for name in args.models or list_models():
            model = create_model(name, weights=None)
            for runtime in ("torch", "onnxruntime"):
                backend = CPUBackend(model, b, CPUOptions(runtime=runtime))
                r = images_per_second(lambda: backend.infer(x), b, min_seconds=args.seconds)
                ref = base if runtime == "torch" else base_ort
                rows.append({"what": name, "runtime": runtime, **r,
                             "ratio": ref["ms_per_batch"] / r["ms_per_batch"]})
    if args.json:
        print(json.dumps({"rows": rows, "cpu": platform.processor() or platform.machine(),
                          "threads": torch.get_num_threads(), "jemalloc": jemalloc}, indent=1))
        return
    print(f"# {args.size}x{args.size}, {torch.get_num_threads()} threads, jemalloc={'yes' if jemalloc else 'no'}, torch {torch.__version__}")
    print(f"{'model':10} {'runtime':12} {'batch':>5} {'img/s':>8} {'ms/batch':>9} {'speed vs bare backbone, same runtime':>38}")
    for r in rows:
        print(f"{r['what']:10} {r['runtime']:12} {r['batch']:>5} {r['images_per_s']:>8.1f} "
              f"{r['ms_per_batch']:>9.1f} {r['ratio']:>37.2f}x")


if __name__ == "__main__":
    main()
