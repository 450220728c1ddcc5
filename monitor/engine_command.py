"""``vqmon engine build|list``: pre-build compiled engines and show the on-disk cache."""
from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from engines.backends import backend_names


def register(subparsers) -> None:
    p = subparsers.add_parser("engine", help="pre-build compiled engines, list the engine cache")
    sub = p.add_subparsers(dest="engine_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build (or load) the compiled engine of a model on a backend")
    b.add_argument("--model", default="bifusion")
    b.add_argument("--backend", default="auto", choices=backend_names())
    b.add_argument("--weights", default="default",
                   help="weights file (default: the trained weights shipped with vqmon); 'none': untrained")
    b.add_argument("--max-batch", type=int, default=8)
    b.set_defaults(func=run_build, heavy=True)
    ls = sub.add_parser("list", help="show cached ONNX graphs and TensorRT engines")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)


def run_build(args: argparse.Namespace) -> int:
    from engines.engine import QualityEngine

    err = Console(stderr=True)
    start = time.perf_counter()
    try:
        engine = QualityEngine(args.model, backend=args.backend, weights=args.weights,
                               max_batch=args.max_batch)
    except Exception as e:  # noqa: BLE001 — reported with its reason, not traced
        err.print(f"[red]error:[/] cannot build {args.model} on {args.backend}: {e}")
        return 2
    reason = getattr(engine.backend, "choice_reason", "")
    err.print(f"built {args.model} on {engine.info['backend_detail']} in {time.perf_counter() - start:.1f} s"
              + (f" ({reason})" if reason else ""))
    return 0


def cached_engines() -> list[dict]:
    """Every cached artefact, with the metadata written beside it (TensorRT) when present."""
    from engines.backends.cache import cache_dir

    rows = []
    for kind, pattern in (("onnx", "*.onnx"), ("tensorrt", "*.ep")):
        for path in sorted(cache_dir(kind).glob(pattern)):
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            rows.append({"kind": kind, "model": path.name.split("-")[0], "path": str(path),
                         "size_mb": round(path.stat().st_size / 2**20, 1),
                         "built": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime)),
                         **{k: meta[k] for k in ("gpu", "cc", "tensorrt", "weights", "batch",
                                                 "parity_max_diff") if k in meta}})
    return rows


def run_list(args: argparse.Namespace) -> int:
    rows = cached_engines()
    out = Console(highlight=False)
    if args.json:
        for r in rows:
            out.print(json.dumps(r), soft_wrap=True)
        return 0
    table = Table(title="vqmon engine cache")
    for col in ("kind", "model", "size MB", "built", "details", "path"):
        table.add_column(col)
    for r in rows:
        details = ", ".join(f"{k}={r[k]}" for k in ("gpu", "cc", "tensorrt", "batch", "parity_max_diff") if k in r)
        table.add_row(r["kind"], r["model"], str(r["size_mb"]), r["built"], details, r["path"])
    out.print(table if rows else "engine cache is empty")
    return 0
