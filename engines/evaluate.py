"""Measuring quality models against human opinion on a labelled set: the protocols.

Trained deep models (``engines.models``) score every image with ``engines.create_model(name)`` and are measured on the whole set. Baselines fitted here
(``brisque``, ``niqe``, ``frozen-ridge``) are measured by seeded k-fold cross-validation: fitted on
k-1 folds, measured on the held-out fold; the report gives the median over folds and each fold.

Metrics: ``engines.metrics``; labelled sets and folds: ``engines.labelled``; the ``vqmon eval``
command: ``engines.eval_command``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .baselines import BASELINES, create_baseline, finetuned
from .images import read_rgb
from .labelled import LabelledSet, kfold_indices
from .metrics import METRIC_KEYS, compute_metrics
from .models import list_models
from .views import DEFAULT_DRAWS


def evaluated_models() -> list[str]:
    """What ``vqmon eval`` measures: the registered models, then the baselines fitted or trained
    in each fold."""
    return [*list_models(), *BASELINES, finetuned.NAME]


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
            views = [view(read_rgb(p), draw=k or None) for p in chunk for k in range(d)]
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
        if name in list_models():
            results.append(evaluate_deep(name, dataset, weights, batch_size, device, progress, draws))
        elif name == finetuned.NAME:
            results.append(evaluate_finetuned(dataset, folds, seed, draws, progress))
        elif name in BASELINES:
            kwargs = {"device": device} if name.startswith("frozen-ridge") else {}
            results.append(evaluate_fitted(name, dataset, folds, seed, cache_dir, progress, kwargs))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(evaluated_models())}")
    return {"csv": str(dataset.csv_path), "n_images": len(dataset), "folds": folds, "seed": seed,
            "results": results}
