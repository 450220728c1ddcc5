"""Alert rules: what one condition watches and when it fires (the semantics are in
:mod:`monitor.alerts`), the default rule set and the merging of per-stream overrides.

The absolute gross-damage rules and their calibration live in :mod:`monitor.gross_rules`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.detectors import DetectorSettings
from monitor.detectors.registry import detector_rules, settings_model
from monitor.gross_rules import FAST_WARMUP, QUALITY_DROP_CONFIRM

__all__ = ["AlertRule", "Confirm", "default_rules", "merge_rules", "SEVERITIES", "DEFAULT_RULES"]

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}


class Confirm(BaseModel):
    """A confirming move of another value key, relative to that key's own baseline."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(..., min_length=1)
    comparison: Literal["below", "above"]
    drop_points: float | None = Field(None, gt=0)
    drop_ratio: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "Confirm":
        if (self.drop_points is None) == (self.drop_ratio is None):
            raise ValueError(f"confirm {self.key!r}: give one of drop_points, drop_ratio")
        return self


class AlertRule(BaseModel):
    """One alert condition on one value key. See the module docstring for the semantics."""

    model_config = ConfigDict(extra="forbid")

    condition: str = Field(..., min_length=1, description="Condition name (metric label 'condition').")
    key: str = Field(..., min_length=1, description="Value key, e.g. 'score', 'black', 'stall_seconds'.")
    comparison: Literal["below", "above"] = Field(..., description="Fire when the value is below/above.")
    threshold: float | None = Field(None, description="Absolute firing threshold (inclusive).")
    clear_threshold: float | None = Field(
        None, description="Absolute clearing threshold (exclusive); defaults to threshold. "
        "For 'below' it must be >= threshold, for 'above' <= threshold.")
    drop_points: float | None = Field(
        None, gt=0, description="Relative rule: fire when the value is this many units beyond "
        "the baseline (below it for 'below', above it for 'above').")
    drop_ratio: float | None = Field(
        None, gt=0, description="Relative rule: as drop_points, as a fraction of the baseline.")
    clear_drop_points: float | None = Field(
        None, ge=0, description="Relative rule: clears when the deviation is below this (default drop_points).")
    clear_drop_ratio: float | None = Field(None, ge=0, description="As clear_drop_points, as a fraction.")
    baseline: Literal["median", "ewma"] = Field(
        "median", description="Baseline: rolling median over baseline_seconds, or an EWMA with "
        "that time constant.")
    baseline_seconds: float = Field(300.0, gt=0)
    baseline_min_seconds: float = Field(
        30.0, ge=0, description="History needed before a relative rule can fire.")
    warmup_seconds: float = Field(
        0.0, ge=0, description="Relative rule: baseline age at which the required deviation "
        "reaches drop_points/drop_ratio; from baseline_min_seconds to then it falls linearly "
        "from warmup_factor times that (a young baseline has seen little of the stream).")
    warmup_factor: float = Field(1.0, ge=1.0, description="See warmup_seconds.")
    mad_factor: float | None = Field(
        None, gt=0, description="Relative median rule: the required deviation is at least this "
        "many robust sigmas (1.4826 x the median absolute deviation of the baseline samples), "
        "so a value that moves with the content needs a larger move to fire.")
    confirm: list[Confirm] = Field(
        default_factory=list, description="Relative rule: it may start only while at least one "
        "of these keys has moved its own way from its own baseline (learned with the rule's); "
        "keys without data are skipped, and with none having data no confirmation is needed.")
    smoothing_seconds: float = Field(0.0, ge=0, description="Trailing-mean window on the value; 0 = raw.")
    smoothing_statistic: Literal["mean", "median"] = Field(
        "mean", description="Mean or median over the smoothing window (the median ignores a "
        "single odd sample, e.g. one motion-blurred frame).")
    min_duration: float = Field(0.0, ge=0, description="Seconds the firing condition must hold.")
    clear_duration: float = Field(0.0, ge=0, description="Seconds the clearing condition must hold.")
    severity: Severity = "warning"
    critical_threshold: float | None = Field(
        None, description="Absolute value beyond which (same direction) an active alert "
        "escalates to critical; severity never de-escalates during one alert.")
    cooldown: float = Field(0.0, ge=0, description="No new start this many seconds after a resolve.")
    update_interval: float | None = Field(
        30.0, gt=0, description="Seconds between periodic 'update' events (None: none).")
    update_delta: float | None = Field(
        None, gt=0, description="Emit an 'update' when the value moved this much since the last event.")
    value_is_age: bool = Field(
        False, description="The value is itself the age of the condition in seconds (e.g. "
        "stall_seconds): the onset is reported as t - value rather than when it crossed.")
    suppressed_by: list[str] = Field(
        default_factory=list, description="Conditions of the same stream during whose alerts this "
        "rule does not start (an alert of its own already active goes on).")
    enabled: bool = True
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> "AlertRule":
        absolute = self.threshold is not None
        relative = self.drop_points is not None or self.drop_ratio is not None
        if absolute == relative:
            raise ValueError(f"rule {self.condition!r}: give either threshold or drop_points/drop_ratio")
        if self.drop_points is not None and self.drop_ratio is not None:
            raise ValueError(f"rule {self.condition!r}: drop_points and drop_ratio are exclusive")
        if absolute:
            if self.clear_drop_points is not None or self.clear_drop_ratio is not None:
                raise ValueError(f"rule {self.condition!r}: clear_drop_* belongs to relative rules")
            if self.confirm or self.mad_factor is not None:
                raise ValueError(f"rule {self.condition!r}: confirm and mad_factor belong to relative rules")
            if self.clear_threshold is not None:
                bad = (self.clear_threshold < self.threshold if self.comparison == "below"
                       else self.clear_threshold > self.threshold)
                if bad:
                    raise ValueError(
                        f"rule {self.condition!r}: clear_threshold {self.clear_threshold} is on the firing "
                        f"side of threshold {self.threshold} ({self.comparison})")
        else:
            if self.clear_threshold is not None:
                raise ValueError(f"rule {self.condition!r}: clear_threshold belongs to absolute rules")
            if self.drop_points is not None and self.clear_drop_ratio is not None or \
                    self.drop_ratio is not None and self.clear_drop_points is not None:
                raise ValueError(f"rule {self.condition!r}: clear_drop_* must use the unit of drop_*")
            if self.clear_drop_points is not None and self.clear_drop_points > self.drop_points:
                raise ValueError(f"rule {self.condition!r}: clear_drop_points > drop_points")
            if self.clear_drop_ratio is not None and self.clear_drop_ratio > self.drop_ratio:
                raise ValueError(f"rule {self.condition!r}: clear_drop_ratio > drop_ratio")
        return self

    @property
    def relative(self) -> bool:
        return self.threshold is None

    def thresholds(self, baseline: float | None, scale: float = 1.0, spread: float = 0.0
                   ) -> tuple[float, float] | None:
        """(fire, clear) thresholds; None for a relative rule without a baseline yet. ``scale``:
        the warm-up factor on the firing deviation, ``spread``: the baseline's robust sigma
        (with ``mad_factor``, a floor under the firing deviation)."""
        if not self.relative:
            fire = float(self.threshold)  # type: ignore[arg-type]
            clear = float(self.clear_threshold) if self.clear_threshold is not None else fire
            return fire, clear
        if baseline is None:
            return None
        sign = -1.0 if self.comparison == "below" else 1.0
        if self.drop_points is not None:
            d_fire = self.drop_points
            d_clear = self.clear_drop_points if self.clear_drop_points is not None else d_fire
        else:
            d_fire = self.drop_ratio * abs(baseline)  # type: ignore[operator]
            cr = self.clear_drop_ratio if self.clear_drop_ratio is not None else self.drop_ratio
            d_clear = cr * abs(baseline)  # type: ignore[operator]
        d_fire *= scale
        if self.mad_factor is not None:
            d_fire = max(d_fire, self.mad_factor * spread)
        return baseline + sign * d_fire, baseline + sign * d_clear

    def fires(self, value: float, fire_th: float) -> bool:
        return value <= fire_th if self.comparison == "below" else value >= fire_th

    def clears(self, value: float, clear_th: float) -> bool:
        return value > clear_th if self.comparison == "below" else value < clear_th


# ----------------------------------------------------------------------------------------------
# defaults
# ----------------------------------------------------------------------------------------------

def default_rules(settings: DetectorSettings | None = None) -> list[AlertRule]:
    """The default rule set: the quality model's rules, then those of every registered detector
    (:mod:`monitor.detectors.registry`), whose thresholds may come from ``settings`` (the
    durations of black and frozen: FFmpeg's 2 s).

    At 2 samples/s an injected black or frozen picture starts its alert 2.0-2.5 s after the
    onset, a quality step (e.g. 70 -> 30) 2.0-2.5 s after it, a stall 3 s after the last frame.
    The settings of ``quality_low``, ``blocky``, ``noisy``, ``corrupted``, ``overexposed`` and
    ``region_low`` come from measurements on injected degradations and clean clips
    (bench/degradations.py, docs/degradations.md).
    """
    s = settings or settings_model()()  # the defaults of every detector registered now
    rules = [
        # off by default: an absolute score threshold does not carry over between contents. With
        # the shipped model the 1.5 s mean of clean clips falls to 18 (bikes), 8 (cockatoo) and
        # 5 (a flat title card), as low as blur (8-18) or bitrate starvation (12-26) on others,
        # so any default threshold either fires on clean streams or misses
        # (docs/degradations.md); quality_drop (relative to the stream's own scores) is the
        # default quality alarm. Enable it per stream with a threshold under that stream's
        # own measured scores: {quality_low: {enabled: true, threshold: ...}}.
        dict(condition="quality_low", key="score", comparison="below", threshold=40.0,
             clear_threshold=45.0, critical_threshold=20.0, smoothing_seconds=1.5, min_duration=1.0,
             clear_duration=3.0, severity="warning", cooldown=30.0, update_delta=10.0, enabled=False,
             description="Quality score (0-100) low: 1.5 s mean <= 40 for 1 s."),
        # usable after 5 s (40 points then, 20 from 30 s on), at least 2 robust sigmas of the
        # stream's own scores, held 2 s, and confirmed by a detector that moved the same way:
        # a score that moves with the content (pans, cuts, loops) is not a drop
        dict(condition="quality_drop", key="score", comparison="below", drop_points=20.0,
             clear_drop_points=10.0, baseline="median", baseline_seconds=300.0, **FAST_WARMUP,
             mad_factor=2.0, confirm=QUALITY_DROP_CONFIRM, smoothing_seconds=2.0, min_duration=2.0,
             clear_duration=3.0, severity="warning", cooldown=30.0, update_delta=10.0,
             description="Quality score 20 points (40 on a 5 s baseline) below the stream's own "
                         "5-minute median, confirmed by a detector."),
        # off by default: the worst map cell of clean footage is already 4-19 with the shipped
        # models (flat sky, dark areas), as low as on degraded pictures, so no threshold
        # separates them (docs/degradations.md); enable it per stream with a measured threshold
        dict(condition="region_low", key="worst_region", comparison="below", threshold=20.0,
             clear_threshold=30.0, smoothing_seconds=2.0, min_duration=3.0, clear_duration=5.0,
             severity="info", cooldown=60.0, enabled=False,
             description="Worst region of the quality map <= 20 (local damage, obstruction)."),
        *detector_rules(s),
    ]
    return [AlertRule.model_validate(r) for r in rules]


DEFAULT_RULES: tuple[AlertRule, ...] = tuple(default_rules())


def merge_rules(base: Iterable[AlertRule], overrides: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
                ) -> list[AlertRule]:
    """Apply overrides to a rule list (e.g. from YAML) and return the new list.

    ``overrides`` maps condition name -> fields to change (``{enabled: false}`` disables;
    ``null`` too), or is a list of mappings each naming its ``condition``. Configuring a rule
    that is off by default without saying ``enabled`` turns it on (``quality_low: {threshold:
    35}`` means "alert below 35"). A name not in ``base`` must be a complete new rule. Changing ``threshold`` (or ``drop_points`` /
    ``drop_ratio``) without its clear counterpart moves the clear threshold with it, keeping
    the hysteresis gap. Unknown fields raise ``pydantic.ValidationError``. For example::

        alerts:                      # a stream's section of the monitor's YAML
          quality_low: {enabled: true, threshold: 35, min_duration: 2}   # off by default
          frozen: {enabled: false}   # a camera that legitimately shows a still picture
          letterbox: null            # same as enabled: false
          too_dark:                  # a new rule
            key: black
            comparison: above
            threshold: 0.6
            min_duration: 30
            severity: info
    """
    rules = {r.condition: r for r in base}
    if not overrides:
        return list(rules.values())
    if isinstance(overrides, Mapping):
        items = [(str(k), v) for k, v in overrides.items()]
    else:
        items = []
        for o in overrides:
            if "condition" not in o:
                raise ValueError(f"alert override without 'condition': {dict(o)!r}")
            items.append((str(o["condition"]), o))
    for name, o in items:
        if o is None or o is False:
            o = {"enabled": False}
        o = dict(o)
        o.pop("condition", None)
        old = rules.get(name)
        if old is None:
            rules[name] = AlertRule.model_validate({"condition": name, **o})
            continue
        if not old.enabled and o and "enabled" not in o:
            o["enabled"] = True
        d = old.model_dump()
        for fire, clear in (("threshold", "clear_threshold"), ("drop_points", "clear_drop_points"),
                            ("drop_ratio", "clear_drop_ratio")):
            if o.get(fire) is not None and clear not in o and d.get(clear) is not None and d.get(fire) is not None:
                new_clear = d[clear] + (float(o[fire]) - d[fire])
                o[clear] = max(new_clear, 0.0) if clear != "clear_threshold" else new_clear
        if "threshold" in o and o["threshold"] is not None and old.relative:
            d.update(drop_points=None, drop_ratio=None, clear_drop_points=None, clear_drop_ratio=None)
        if any(o.get(k) is not None for k in ("drop_points", "drop_ratio")) and not old.relative:
            d.update(threshold=None, clear_threshold=None)
        d.update(o)
        rules[name] = AlertRule.model_validate(d)
    return list(rules.values())
