"""CPU throughput of both quality models beside the bare backbone, measured in one run.

    python bench/engine.py [--size 384] [--batches 1 8] [--seconds 3]

Prints images/s for the bare Lite0 features and for each model, in torch eager and in ONNX
Runtime (the CPU backend's default), at each batch size, with each model's speed relative to
the bare backbone in the same runtime (1.0 = free; 0.8 = the model takes 1.25x the time).
Re-runs itself under jemalloc when installed, like the CLI (VQMON_JEMALLOC=0 disables).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reexec_with_jemalloc([str(Path(__file__).resolve()), *sys.argv[1:]])
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
