"""Per-stream, per-rule state of the alert engine (monitor.alerts): the smoothing window and
the stream's own baseline for relative rules.

The baseline is the rolling median of the rule's raw values over ``baseline_seconds`` (or an
EWMA with that time constant), learned only while the rule is ok. It is usable after
``baseline_min_seconds`` of history; from then on the required deviation is

    max(drop * warm-up factor, mad_factor * 1.4826 * MAD)

where the warm-up factor falls linearly from ``warmup_factor`` at ``baseline_min_seconds`` to
1 at ``warmup_seconds`` (a young baseline has seen little of the stream, so only a large
deviation counts), and MAD is the median absolute deviation of the baseline's samples (a
stream whose value moves with its content needs a larger deviation: a robust spread).

A rule with ``confirm`` entries keeps, beside its own, the baselines of the confirming keys
(learned at the same moments, from the stream's latest values), so that "the score fell and
the blur rose with it" can be told from "the score fell".
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from monitor.alert_rules import AlertRule, Confirm

MAD_TO_SIGMA = 1.4826


def _median_mad(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    med = float(np.median(a))
    return med, float(np.median(np.abs(a - med)))


@dataclass
class Baseline:
    """(t, value) history of one key within the rule's baseline window."""

    samples: deque = field(default_factory=deque)
    ewma: float | None = None
    ewma_t: float | None = None
    first_t: float | None = None

    def learn(self, rule: "AlertRule", t: float, v: float) -> None:
        if rule.baseline == "ewma":
            if self.ewma is None or self.ewma_t is None:
                self.ewma = v
            else:
                a = 1.0 - math.exp(-max(t - self.ewma_t, 0.0) / rule.baseline_seconds)
                self.ewma += a * (v - self.ewma)
            self.ewma_t = t
        else:
            self.samples.append((t, v))
            while self.samples and self.samples[0][0] < t - rule.baseline_seconds:
                self.samples.popleft()
        if self.first_t is None:
            self.first_t = t
        elif rule.baseline == "median" and self.samples:
            # after a long alert the old samples aged out: history restarts with what is left
            self.first_t = max(self.first_t, self.samples[0][0])

    def age(self, t: float) -> float:
        return -math.inf if self.first_t is None else t - self.first_t

    def value(self, rule: "AlertRule") -> tuple[float, float] | None:
        """(centre, robust sigma); the EWMA has no spread (0)."""
        if rule.baseline == "ewma":
            return None if self.ewma is None else (self.ewma, 0.0)
        if not self.samples:
            return None
        med, mad = _median_mad([x for _, x in self.samples])
        return med, MAD_TO_SIGMA * mad


@dataclass
class RuleState:
    window: deque = field(default_factory=deque)  # (t, raw value) within smoothing_seconds
    base: Baseline = field(default_factory=Baseline)
    confirm_bases: dict[str, Baseline] = field(default_factory=dict)
    phase: str = "ok"  # ok | pending | active
    pending_since: float = 0.0
    onset: float = 0.0
    clearing_since: float | None = None
    severity: str = "info"
    peak: float = 0.0
    last_event_at: float = 0.0
    last_event_value: float = 0.0
    frozen_baseline: float | None = None
    frozen_scale: tuple[float, float] = (1.0, 0.0)  # (warm-up factor, robust sigma) when it fired
    cooldown_until: float = -math.inf

    def smoothed(self, t: float, v: float, seconds: float, statistic: str = "mean") -> float:
        self.window.append((t, v))
        while self.window and self.window[0][0] <= t - seconds:
            self.window.popleft()
        if len(self.window) == 1:
            return v
        if statistic == "median":  # one odd sample (a motion-blurred frame) does not move it
            return float(np.median([x for _, x in self.window]))
        return float(sum(x for _, x in self.window) / len(self.window))

    def baseline(self, rule: "AlertRule", t: float) -> tuple[float, float, float] | None:
        """(baseline, warm-up factor, robust sigma), or None while the history is too short."""
        age = self.base.age(t)
        if age < rule.baseline_min_seconds:
            return None
        bv = self.base.value(rule)
        if bv is None:
            return None
        return bv[0], warmup_scale(rule, age), bv[1]

    def learn(self, rule: "AlertRule", t: float, v: float, latest: Mapping[str, float]) -> None:
        self.base.learn(rule, t, v)
        for c in rule.confirm:
            x = latest.get(c.key)
            if x is not None and math.isfinite(x):
                self.confirm_bases.setdefault(c.key, Baseline()).learn(rule, t, x)

    def confirmed(self, rule: "AlertRule", latest: Mapping[str, float]) -> bool:
        """True when the rule has no confirming keys, when none of them has data (detectors
        off), or when at least one has moved its own way by its amount from its baseline."""
        if not rule.confirm:
            return True
        judged = False
        for c in rule.confirm:
            x = latest.get(c.key)
            base = self.confirm_bases.get(c.key)
            bv = base.value(rule) if base is not None else None
            if x is None or not math.isfinite(x) or bv is None:
                continue
            judged = True
            if confirms(c, x, bv[0]):
                return True
        return not judged


def warmup_scale(rule: "AlertRule", age: float) -> float:
    """Factor on the required deviation for a baseline ``age`` seconds old (1 once warm)."""
    if rule.warmup_factor <= 1.0 or rule.warmup_seconds <= rule.baseline_min_seconds:
        return 1.0
    share = (rule.warmup_seconds - age) / (rule.warmup_seconds - rule.baseline_min_seconds)
    return 1.0 + (rule.warmup_factor - 1.0) * min(max(share, 0.0), 1.0)


def confirms(c: "Confirm", value: float, baseline: float) -> bool:
    d = c.drop_points if c.drop_points is not None else c.drop_ratio * abs(baseline)  # type: ignore[operator]
    return value <= baseline - d if c.comparison == "below" else value >= baseline + d
