"""Baselines on livec-dev: seeded k-fold cross-validation of BRISQUE, NIQE and frozen-Lite0 ridge.

    python bench/baselines.py [--csv PATH] [--folds 5] [--seed 0] [--models brisque niqe frozen-ridge]
                              [--cache-dir DIR] [--json-out FILE] [--frozen-size 384]

Prints the median SROCC / PLCC / KROCC / RMSE over folds, each fold's SROCC, and feature time.
Features are cached (``engines.baselines.default_cache_dir()`` unless ``--cache-dir``), so a
rerun only refits the regressors.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.baselines import default_cache_dir
from engines.baselines import BASELINES
from engines.eval_command import _json_safe
from engines.evaluate import evaluate_fitted
from engines.labelled import load_labelled_csv

DEFAULT_CSV = ROOT.parent / "shared" / "datasets" / "livec-dev" / "labels.csv"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=list(BASELINES), choices=BASELINES)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--frozen-size", type=int, default=None,
                    help="frozen-ridge input size (default 384, the models' input)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    dataset = load_labelled_csv(args.csv)
    cache = args.cache_dir or default_cache_dir()
    results = []
    for name in args.models:
        t0 = time.perf_counter()
        kwargs = {"input_size": args.frozen_size} if name == "frozen-ridge" and args.frozen_size else None
        r = evaluate_fitted(name, dataset, folds=args.folds, seed=args.seed, cache_dir=cache,
                            baseline_kwargs=kwargs)
        if kwargs:
            r["model"] = f"{name} @{args.frozen_size}"
        r["total_seconds"] = round(time.perf_counter() - t0, 2)
        results.append(r)

    table = Table(title=f"{args.csv.parent.name}: {len(dataset)} images, {args.folds}-fold CV "
                        f"(seed {args.seed}), median over folds")
    for col in ("model", "SROCC", "PLCC", "KROCC", "RMSE", "SROCC per fold", "feat s/img", "total s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r["metrics"]
        folds = " ".join(f"{f['srocc']:.3f}" for f in r["per_fold"])
        table.add_row(r["model"], f"{m['srocc']:.4f}", f"{m['plcc']:.4f}", f"{m['krocc']:.4f}",
                      f"{m['rmse']:.2f}", folds, f"{r['feature_seconds'] / len(dataset):.4f}",
                      f"{r['total_seconds']:.1f}")
    console = Console(width=160)
    console.print(table)
    for r in results:
        if "whole_set_unfitted" in r:
            w = r["whole_set_unfitted"]
            console.print(f"{r['model']} without any fit (-NIQE vs MOS, whole set): "
                          f"SROCC {w['srocc']:.4f}, PLCC {w['plcc']:.4f}")
    console.print("(feat s/img is ~0 when the features came from the cache)")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(_json_safe({"csv": str(args.csv), "n_images": len(dataset),
                                                        "results": results}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
