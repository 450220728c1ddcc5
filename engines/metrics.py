"""How well predictions agree with human opinion (MOS).

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
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

METRIC_KEYS = ("srocc", "plcc", "krocc", "rmse", "plcc_raw")


class MetricWarning(RuntimeWarning):
    """A metric could not be computed (degenerate input); it is reported as NaN."""


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
