"""Measuring quality models against human opinion: metrics, labelled sets, k-fold, ``vqmon eval``.

Metrics (:func:`compute_metrics`), the field's usual four:

- ``srocc`` Spearman and ``krocc`` Kendall (tau-b) rank correlations of predictions with MOS;
- ``plcc`` Pearson correlation and ``rmse`` after mapping the predictions to the MOS scale with
  the standard 5-parameter logistic of the VQEG reports,
  ``b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5`` (or the 4-parameter one,
  ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``), fitted by least squares on the evaluated
  set itself, as is customary. Like every toolbox that reports PLCC this way, the fitted curve
  absorbs the direction: a model whose scores fall as quality rises still gets a positive
  ``plcc`` — look at ``srocc`` for the sign. If the fit fails a straight line is used and
  ``fit`` says so;
- ``plcc_raw``: Pearson correlation with no mapping.

Degenerate input (fewer than 3 pairs, NaN/inf predictions, constant predictions or MOS) gives
NaN metrics with a :class:`MetricWarning` instead of an exception.

Labelled sets (:func:`load_labelled_csv`): a CSV with at least the columns ``image`` and ``mos``
(more are fine); image paths are relative to the CSV's folder, or to an ``images/`` folder beside
it (absolute paths also work).

Protocols: trained deep models (``bifusion``, ``glint``) score every image with
``engines.create_model(name)`` and are measured on the whole set. Baselines fitted here
(``brisque``, ``niqe``, ``frozen-ridge``) are measured by seeded k-fold cross-validation: fitted on
k-1 folds, measured on the held-out fold; the report gives the median over folds and each fold.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

from .views import DEFAULT_DRAWS

DEEP_MODELS = ("bifusion", "glint")
FITTED_MODELS = ("brisque", "niqe", "frozen-ridge", "frozen-ridge-native")
TRAINED_MODELS = ("lite0-finetune",)  # trained end to end in each fold (engines.baselines.finetuned)
ALL_MODELS = DEEP_MODELS + FITTED_MODELS + TRAINED_MODELS
METRIC_KEYS = ("srocc", "plcc", "krocc", "rmse", "plcc_raw")


class MetricWarning(RuntimeWarning):
    """A metric could not be computed (degenerate input); it is reported as NaN."""


class LabelError(ValueError):
    """A labelled-set CSV that cannot be used, with the reason."""


# =========================================================================== metrics

def logistic5(x, b1, b2, b3, b4, b5):
    return b1 * (special.expit(b2 * (x - b3)) - 0.5) + b4 * x + b5


def logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) * special.expit((x - b3) / (abs(b4) + 1e-12)) + b2


@dataclass(frozen=True)
class Mapping:
    """A fitted monotone-ish mapping of predictions to the MOS scale (call it on predictions)."""

    kind: str  # "logistic5", "logistic4" or "linear"
    params: tuple[float, ...]
    x_mean: float
    x_scale: float

    def __call__(self, x) -> np.ndarray:
        xs = (np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_scale
        if self.kind == "logistic5":
            return logistic5(xs, *self.params)
        if self.kind == "logistic4":
            return logistic4(xs, *self.params)
        return self.params[0] * xs + self.params[1]


def fit_logistic(x, y, kind: str = "logistic5") -> Mapping:
    """Least-squares logistic from predictions ``x`` to MOS ``y`` (x is z-scored internally).

    Several starting points are tried; the best fit is kept unless a straight line fits better
    (a failed or degenerate optimisation), in which case the line is returned.
    """
    if kind not in ("logistic5", "logistic4", "linear"):
        raise ValueError(f"unknown mapping {kind!r}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx = float(x.mean())
    sx = float(x.std()) or 1.0
    xs = (x - mx) / sx
    slope, icept = np.polyfit(xs, y, 1) if np.ptp(xs) > 0 else (0.0, float(y.mean()))
    best = Mapping("linear", (float(slope), float(icept)), mx, sx)
    best_sse = float(np.sum((best(x) - y) ** 2))
    if kind == "linear":
        return best
    span = float(np.ptp(y)) or 1.0
    sign = 1.0 if slope >= 0 else -1.0
    if kind == "logistic5":
        func = logistic5
        starts = [(sign * span, 1.0, 0.0, 0.0, float(y.mean())),
                  (sign * span, 3.0, 0.0, 0.0, float(y.mean())),
                  (sign * span / 2, 0.5, float(np.median(xs)), float(slope) / 2, float(y.mean()))]
    else:
        func = logistic4
        hi, lo = (float(y.max()), float(y.min())) if sign > 0 else (float(y.min()), float(y.max()))
        starts = [(hi, lo, 0.0, 1.0), (hi, lo, 0.0, 0.3), (hi, lo, float(np.median(xs)), 2.0)]
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = optimize.curve_fit(func, xs, y, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError):
            continue
        cand = Mapping(kind, tuple(float(p) for p in params), mx, sx)
        pred = cand(x)
        if not np.all(np.isfinite(pred)):
            continue
        sse = float(np.sum((pred - y) ** 2))
        if sse < best_sse - 1e-12 * max(best_sse, 1.0) or (best.kind == "linear" and sse <= best_sse):
            best, best_sse = cand, sse
    return best


def _nan_metrics(n: int, reason: str) -> dict:
    warnings.warn(f"metrics are NaN: {reason}", MetricWarning, stacklevel=3)
    return {"n": n, **{k: math.nan for k in METRIC_KEYS}, "fit": None}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def compute_metrics(pred, mos, fit: str = "logistic5") -> dict:
    """SROCC, KROCC, PLCC (after ``fit``) and raw, RMSE (after ``fit``) of ``pred`` against ``mos``.

    Returns ``{"n", "srocc", "plcc", "krocc", "rmse", "plcc_raw", "fit"}`` with ``fit`` the
    mapping actually used. Degenerate input gives NaN metrics and a :class:`MetricWarning`.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(mos, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} MOS values")
    n = int(p.size)
    if n < 3:
        return _nan_metrics(n, f"only {n} pairs (need 3)")
    if not np.all(np.isfinite(y)):
        return _nan_metrics(n, "MOS contains NaN/inf")
    if not np.all(np.isfinite(p)):
        return _nan_metrics(n, f"{int(np.sum(~np.isfinite(p)))} predictions are NaN/inf")
    if np.ptp(p) == 0:
        return _nan_metrics(n, "predictions are constant")
    if np.ptp(y) == 0:
        return _nan_metrics(n, "MOS values are constant")
    srocc = float(stats.spearmanr(p, y).statistic)
    krocc = float(stats.kendalltau(p, y).statistic)
    plcc_raw = _pearson(p, y)
    mapping = fit_logistic(p, y, kind=fit)
    fitted = mapping(p)
    plcc = _pearson(fitted, y) if np.ptp(fitted) > 0 else math.nan
    if math.isnan(plcc):
        warnings.warn("PLCC is NaN: the fitted mapping is constant", MetricWarning, stacklevel=2)
    rmse = float(np.sqrt(np.mean((fitted - y) ** 2)))
    return {"n": n, "srocc": srocc, "plcc": plcc, "krocc": krocc, "rmse": rmse,
            "plcc_raw": plcc_raw, "fit": mapping.kind}


# =========================================================================== labelled sets

@dataclass(frozen=True)
class LabelledSet:
    """Images with their MOS (higher is better), as listed in a CSV."""

    csv_path: Path
    images: tuple[str, ...]  # as written in the CSV
    paths: tuple[Path, ...]  # resolved
    mos: np.ndarray  # float64 (N,)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> LabelledSet:
        idx = np.asarray(idx, dtype=np.int64)
        return LabelledSet(self.csv_path, tuple(self.images[i] for i in idx),
                           tuple(self.paths[i] for i in idx), self.mos[idx].copy())


def load_labelled_csv(csv_path: str | Path, image_column: str = "image", mos_column: str = "mos",
                      check_files: bool = True, image_root: str | Path | None = None) -> LabelledSet:
    """Read a labelled set; every problem raises :class:`LabelError` naming the file and line.

    Image paths are taken relative to ``image_root`` if given, else to the CSV's folder; when
    they are not all there but all are in an ``images/`` folder beside the CSV (the layout of
    ``datasets/livec-dev``), that folder is used.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelError(f"labels file not found: {csv_path}")
    root = Path(image_root).resolve() if image_root is not None else csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LabelError(f"{csv_path} is empty (expected a header with '{image_column}' and "
                             f"'{mos_column}')")
        header = [h.strip() for h in header]
        missing = [c for c in (image_column, mos_column) if c not in header]
        if missing:
            raise LabelError(f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                             f"found {', '.join(repr(h) for h in header)}")
        i_img, i_mos = header.index(image_column), header.index(mos_column)
        images, mos, seen = [], [], {}
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_img, i_mos):
                raise LabelError(f"{csv_path}:{line_no}: row has {len(row)} fields, "
                                 f"expected {len(header)}")
            name, value = row[i_img].strip(), row[i_mos].strip()
            if not name:
                raise LabelError(f"{csv_path}:{line_no}: empty '{image_column}'")
            try:
                score = float(value)
            except ValueError:
                raise LabelError(f"{csv_path}:{line_no}: '{mos_column}' is not a number: "
                                 f"{value!r}") from None
            if not math.isfinite(score):
                raise LabelError(f"{csv_path}:{line_no}: '{mos_column}' is not finite: {value!r}")
            if name in seen:
                raise LabelError(f"{csv_path}:{line_no}: image {name!r} listed twice "
                                 f"(first on line {seen[name]})")
            seen[name] = line_no
            images.append(name)
            mos.append(score)
    if not images:
        raise LabelError(f"{csv_path} has a header but no rows")
    paths = tuple(root / p for p in images)
    if image_root is None and not all(p.is_file() for p in paths):
        alt = tuple(root / "images" / p for p in images)
        if all(p.is_file() for p in alt):
            paths = alt
    if check_files:
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            more = f" (and {len(absent) - 3} more)" if len(absent) > 3 else ""
            raise LabelError(f"{csv_path}: {len(absent)} image file(s) not found: "
                             f"{', '.join(absent[:3])}{more}")
    return LabelledSet(csv_path, tuple(images), paths, np.asarray(mos, dtype=np.float64))


def load_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB uint8 array ``(H, W, 3)`` (pixel order as stored, no EXIF turn)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8).copy()


# =========================================================================== k-fold

def kfold_indices(n: int, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold split of ``range(n)``: ``k`` pairs ``(train_idx, test_idx)``, each sorted.

    Test folds are disjoint, cover every index once, and differ in size by at most one.
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} items into {k} folds")
    perm = np.random.default_rng(seed).permutation(n)
    chunks = np.array_split(perm, k)
    return [(np.sort(np.concatenate([c for j, c in enumerate(chunks) if j != i])), np.sort(chunks[i]))
            for i in range(k)]


# =========================================================================== scoring

def _create_model(name: str, weights):
    """The trained engine ``name`` (kept behind a function so tests can stand one in)."""
    from . import create_model

    return create_model(name, weights=weights)


def score_deep_model(name: str, paths: Sequence[str | Path], weights="default", batch_size: int = 8,
                     device: str = "cpu", progress: bool = True, draws: int = DEFAULT_DRAWS) -> tuple[np.ndarray, dict]:
    """Score image files with trained model ``name``: ``(scores (N,), model info)``; each score
    is the mean over ``draws`` views of the image (the model's input view, ``engines.views``)."""
    import torch
    from tqdm import tqdm

    from .preprocess import prepare_batch

    try:
        model = _create_model(name, weights)
    except ImportError as e:
        raise RuntimeError(f"model {name!r} is not available in this build: {e}") from e
    model = model.to(device).eval()
    out = []
    with tqdm(total=len(paths), desc=f"{name} scoring", unit="img", disable=not progress,
              leave=False) as bar, torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            view, d = model.input_view, (max(1, draws) if model.input_view.mode != "resize" else 1)
            views = [view(load_image(p), draw=k or None) for p in chunk for k in range(d)]
            scores, _ = model(prepare_batch(views, size=view.side).to(device))
            out.append(scores.float().cpu().numpy().reshape(len(chunk), d).mean(1))
            bar.update(len(chunk))
    info = {"trained": bool(getattr(model, "trained", False)),
            "weights": dict(getattr(model, "weights_info", {}) or {})}
    return np.concatenate(out), info


def _median_metrics(per_fold: list[dict]) -> dict:
    med = {k: float(np.median([f[k] for f in per_fold])) for k in METRIC_KEYS}
    med["n"] = int(sum(f["n"] for f in per_fold))
    return med


def evaluate_fitted(name: str, dataset: LabelledSet, folds: int = 5, seed: int = 0,
                    cache_dir=None, progress: bool = True, baseline_kwargs: dict | None = None) -> dict:
    """k-fold cross-validation of baseline ``name`` on ``dataset``."""
    from .baselines import create_baseline

    baseline = create_baseline(name, **(baseline_kwargs or {}))
    t0 = time.perf_counter()
    feats = baseline.extract_paths(dataset.paths, cache_dir=cache_dir, progress=progress)
    t_feat = time.perf_counter() - t0
    per_fold = []
    for i, (train, test) in enumerate(kfold_indices(len(dataset), folds, seed)):
        baseline.fit(feats[train], dataset.mos[train])
        m = compute_metrics(baseline.predict(feats[test]), dataset.mos[test])
        per_fold.append({"fold": i, "n_train": int(train.size), **m})
    result = {"model": name, "protocol": f"{folds}-fold", "folds": folds, "seed": seed,
              "metrics": _median_metrics(per_fold), "per_fold": per_fold,
              "feature_seconds": round(t_feat, 3)}
    if name == "niqe":
        # opinion-unaware: also its raw rank agreement on the whole set (quality = -NIQE)
        result["whole_set_unfitted"] = compute_metrics(-feats[:, 0], dataset.mos)
    return result


def evaluate_finetuned(dataset: LabelledSet, folds: int = 5, seed: int = 0, draws: int = DEFAULT_DRAWS,
                       progress: bool = True) -> dict:
    """k-fold cross-validation of the plain Lite0 fine-tuned in each fold (the same folds)."""
    from .baselines import finetuned

    t0 = time.perf_counter()
    splits = kfold_indices(len(dataset), folds, seed)
    preds = finetuned.cross_validate(dataset.paths, dataset.mos, splits, draws=draws, progress=progress)
    per_fold = [{"fold": i, "n_train": int(train.size), **compute_metrics(p, dataset.mos[test])}
                for i, ((train, test), p) in enumerate(zip(splits, preds))]
    return {"model": finetuned.NAME, "protocol": f"{folds}-fold", "folds": folds, "seed": seed,
            "draws": draws, "metrics": _median_metrics(per_fold), "per_fold": per_fold,
            "seconds": round(time.perf_counter() - t0, 3)}


def evaluate_deep(name: str, dataset: LabelledSet, weights="default", batch_size: int = 8,
                  device: str = "cpu", progress: bool = True, draws: int = DEFAULT_DRAWS) -> dict:
    t0 = time.perf_counter()
    scores, info = score_deep_model(name, dataset.paths, weights=weights, batch_size=batch_size,
                                    device=device, progress=progress, draws=draws)
    seconds = time.perf_counter() - t0
    return {"model": name, "protocol": "whole-set", "metrics": compute_metrics(scores, dataset.mos),
            "seconds": round(seconds, 3), **info}


def evaluate(models: Sequence[str], dataset: LabelledSet, folds: int = 5, seed: int = 0,
             weights="default", batch_size: int = 8, device: str = "cpu", cache_dir=None,
             progress: bool = True, draws: int = DEFAULT_DRAWS) -> dict:
    """Measure each model on ``dataset``; the dict ``vqmon eval --json`` prints."""
    results = []
    for name in models:
        if name in DEEP_MODELS:
            results.append(evaluate_deep(name, dataset, weights, batch_size, device, progress, draws))
        elif name in TRAINED_MODELS:
            results.append(evaluate_finetuned(dataset, folds, seed, draws, progress))
        elif name in FITTED_MODELS:
            kwargs = {"device": device} if name.startswith("frozen-ridge") else {}
            results.append(evaluate_fitted(name, dataset, folds, seed, cache_dir, progress, kwargs))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    return {"csv": str(dataset.csv_path), "n_images": len(dataset), "folds": folds, "seed": seed,
            "results": results}


# =========================================================================== CLI

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
    p.add_argument("--model", dest="models", nargs="+", action="extend", choices=ALL_MODELS,
                   metavar="MODEL", help=f"model(s) to measure: {', '.join(ALL_MODELS)} "
                   "(repeatable; default: bifusion glint)")
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
    from .baselines import default_cache_dir

    models = list(dict.fromkeys(args.models or list(DEEP_MODELS)))
    if args.weights != "default" and sum(m in DEEP_MODELS for m in models) != 1:
        print("error: --weights needs exactly one deep model (bifusion or glint)", file=sys.stderr)
        return 2
    try:
        dataset = load_labelled_csv(args.csv, image_root=args.image_root)
    except LabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        dataset = dataset.subset(np.arange(min(args.limit, len(dataset))))
    if any(m in FITTED_MODELS + TRAINED_MODELS for m in models) and not 2 <= args.folds <= len(dataset):
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
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run_eval, heavy=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engines.evaluate ...`` (same options as ``vqmon eval``)."""
    parser = argparse.ArgumentParser(prog="python -m engines.evaluate")
    add_arguments(parser)
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
