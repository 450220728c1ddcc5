"""CPU throughput of both quality models beside the bare backbone, measured in one run.

    python bench/engine.py [--size 384] [--batches 1 8] [--seconds 3]

Prints images/s for: bare Lite0 features (torch eager), each model in torch eager and in the
CPU backend's ONNX Runtime path, at each batch size, with the ratio to the bare backbone.
Use jemalloc for representative numbers (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import images_per_second  # noqa: E402

from engines import create_model, list_models  # noqa: E402
from engines.backbone import load_pretrained_backbone  # noqa: E402
from engines.backends.cpu import CPUBackend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    jemalloc = "jemalloc" in os.environ.get("LD_PRELOAD", "")
    rows = []
    backbone = load_pretrained_backbone(drop_classifier=True)
    for b in args.batches:
        x = torch.randn(b, 3, args.size, args.size)

        def bare():
            with torch.inference_mode():
                backbone.forward_features(x, with_head=True)
        base = images_per_second(bare, b, min_seconds=args.seconds)
        rows.append({"what": "backbone", "runtime": "torch", **base, "ratio": 1.0})
        for name in args.models or list_models():
            model = create_model(name, weights=None)
            for runtime in ("torch", "onnxruntime"):
                backend = CPUBackend(model, max_batch=b, runtime=runtime)
                r = images_per_second(lambda: backend.infer(x), b, min_seconds=args.seconds)
                rows.append({"what": name, "runtime": runtime, **r,
                             "ratio": r["images_per_s"] / base["images_per_s"]})
    if args.json:
        print(json.dumps({"rows": rows, "cpu": platform.processor() or platform.machine(),
                          "threads": torch.get_num_threads(), "jemalloc": jemalloc}, indent=1))
        return
    print(f"# {args.size}x{args.size}, {torch.get_num_threads()} threads, jemalloc={'yes' if jemalloc else 'no'}, torch {torch.__version__}")
    print(f"{'model':10} {'runtime':12} {'batch':>5} {'img/s':>8} {'ms/batch':>9} {'vs backbone':>12}")
    for r in rows:
        print(f"{r['what']:10} {r['runtime']:12} {r['batch']:>5} {r['images_per_s']:>8.1f} "
              f"{r['ms_per_batch']:>9.1f} {r['ratio']:>11.2f}x")


if __name__ == "__main__":
    main()
