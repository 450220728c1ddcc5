"""``vqmon eval`` (and ``python -m engines.eval_command``): measure quality models against a
labelled set (MOS) and print the report."""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .baselines import BASELINES, default_cache_dir, finetuned
from .evaluate import evaluate, evaluated_models
from .labelled import LabelError, load_labelled_csv
from .models import list_models
from .views import DEFAULT_DRAWS


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _fmt(v, digits: int = 4) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render_report(report: dict, console=None) -> None:
    """Rich tables: one row per model, then SROCC/PLCC per fold for the k-fold models."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{report['csv']}  ({report['n_images']} images)")
    for col in ("model", "protocol", "SROCC", "PLCC", "KROCC", "RMSE", "PLCC raw"):
        table.add_column(col, justify="left" if col in ("model", "protocol") else "right")
    notes = []
    for r in report["results"]:
        m = r["metrics"]
        proto = r["protocol"] + (" (median)" if "per_fold" in r else "")
        table.add_row(r["model"], proto, *(_fmt(m[k]) for k in ("srocc", "plcc", "krocc")),
                      _fmt(m["rmse"], 2), _fmt(m["plcc_raw"]))
        if r.get("trained") is False:
            notes.append(f"{r['model']}: no trained weights loaded; its scores are NOT meaningful")
        if "whole_set_unfitted" in r:
            w = r["whole_set_unfitted"]
            table.add_row(r["model"] + " (-NIQE, no fit)", "whole-set", _fmt(w["srocc"]),
                          _fmt(w["plcc"]), _fmt(w["krocc"]), _fmt(w["rmse"], 2), _fmt(w["plcc_raw"]))
    console.print(table)
    fold_models = [r for r in report["results"] if "per_fold" in r]
    if fold_models:
        k = max(len(r["per_fold"]) for r in fold_models)
        ft = Table(title="per fold (SROCC / PLCC)")
        ft.add_column("model")
        for i in range(k):
            ft.add_column(f"fold {i}", justify="right")
        for r in fold_models:
            ft.add_row(r["model"], *(f"{_fmt(f['srocc'], 3)} / {_fmt(f['plcc'], 3)}"
                                     for f in r["per_fold"]))
        console.print(ft)
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, type=Path,
                   help="labelled set: CSV with columns image,mos (paths relative to the CSV)")
    p.add_argument("--image-root", type=Path, default=None,
                   help="folder the CSV's image paths are relative to (default: the CSV's folder, "
                   "or its images/ subfolder)")
    p.add_argument("--model", dest="models", nargs="+", action="extend", choices=evaluated_models(),
                   metavar="MODEL", help=f"model(s) to measure: {', '.join(evaluated_models())} "
                   f"(repeatable; default: {' '.join(list_models())})")
    p.add_argument("--folds", type=int, default=5,
                   help="k for cross-validation of the baselines fitted here (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold split (default 0)")
    p.add_argument("--weights", default="default",
                   help="weights file for a single deep model (default: the shipped weights)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                   help=f"views averaged per image by the deep models (default {DEFAULT_DRAWS})")
    p.add_argument("--device", default="cpu", help="torch device for deep models / frozen-ridge")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache folder for baselines (default: $VQMON_CACHE_DIR/features "
                   "or ~/.cache/vqmon/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of the CSV")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    """The ``eval`` command; returns the process exit code."""
    models = list(dict.fromkeys(args.models or list_models()))
    if args.weights != "default" and sum(m in list_models() for m in models) != 1:
        print(f"error: --weights needs exactly one deep model ({' or '.join(list_models())})", file=sys.stderr)
        return 2
    try:
        dataset = load_labelled_csv(args.csv, image_root=args.image_root)
    except LabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        dataset = dataset.subset(np.arange(min(args.limit, len(dataset))))
    if any(m in (*BASELINES, finetuned.NAME) for m in models) and not 2 <= args.folds <= len(dataset):
        print(f"error: --folds must be between 2 and the number of images ({len(dataset)})",
              file=sys.stderr)
        return 2
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    try:
        report = evaluate(models, dataset, folds=args.folds, seed=args.seed, weights=args.weights,
                          batch_size=args.batch_size, device=args.device, cache_dir=cache_dir,
                          progress=not args.no_progress, draws=args.draws)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_json_safe(report), indent=2))
    else:
        render_report(report)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to a ``vqmon`` argparse subparsers object.

    The parser's default ``func`` is :func:`run_eval` (call ``args.func(args)`` -> exit code).
    """
    p = subparsers.add_parser("eval", help="measure quality models against a labelled set (MOS)",
                              description="Measure quality models against a labelled set (MOS).")
    add_arguments(p)
    p.set_defaults(func=run_eval, heavy=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engines.eval_command ...`` (same options as ``vqmon eval``)."""
    parser = argparse.ArgumentParser(prog="python -m engines.eval_command")
    add_arguments(parser)
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
