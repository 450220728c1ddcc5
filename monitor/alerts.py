"""Alert engine: per-stream, per-condition state machines over detector and quality values.

The monitor calls, for every published sample of a stream::

    events = engine.update(stream, values, t, context)

``values`` is a flat ``dict[str, float]`` (the model's ``score`` and ``worst_region``, the
keys of ``FrameDetectors.update`` and ``TimingDetectors.values``); ``t`` is the sample's
time in seconds (wall clock, non-decreasing per stream); ``context`` (:class:`AlertContext`
or a mapping with the same keys) carries what events should show: the score, the worst
regions ``[(row, col, score), ...]`` and the frame (a small JPEG is made from it only when
an event is emitted). ``engine.active()`` gives the ``(stream, condition, severity)`` set to
mirror as ``vqmon_alert_active{stream,condition,severity}``.

Each :class:`AlertRule` is a small state machine ``ok -> pending -> active -> ok``:

* the rule's value is the key's value, optionally averaged over the last
  ``smoothing_seconds`` (trailing window);
* it *fires* when the value is at or beyond the threshold (``below``: ``<=``, ``above``:
  ``>=``), the threshold being absolute (``threshold``) or relative to the stream's own
  baseline (``drop_points`` / ``drop_ratio`` away from the rolling median or EWMA of the
  last ``baseline_seconds``; the baseline only learns while the rule is ok, so a long
  degradation does not become its own baseline);
* after it fired continuously for ``min_duration`` s a ``start`` event is emitted with
  ``started_at`` = the onset (the first raw sample of the run that crossed the threshold);
* while active, ``update`` events come every ``update_interval`` s, when the severity
  escalates, or when the value moved by ``update_delta``;
* it *clears* only when the value is strictly beyond ``clear_threshold`` (hysteresis: values
  between the two thresholds keep it active) for ``clear_duration`` s: ``resolved`` event
  with ``ended_at`` and ``duration``;
* after a resolve no new ``start`` for ``cooldown`` s (a condition still present when the
  cooldown ends starts at once, with its real onset);
* a rule does not start while one of its ``suppressed_by`` conditions is active on the same
  stream (one cause, one alert: a black picture is not also "too dark").

A missing or ``nan`` value is "no data": the rule's state does not move.

Rules are data: :func:`default_rules` gives the defaults, :func:`merge_rules` applies
overrides (e.g. a stream's YAML ``alerts:`` section) to them.
"""
from __future__ import annotations

import base64
import io
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.detectors import DetectorSettings

__all__ = [
    "AlertRule",
    "AlertEvent",
    "AlertContext",
    "AlertEngine",
    "default_rules",
    "merge_rules",
    "make_thumbnail_jpeg",
    "SEVERITIES",
    "DEFAULT_RULES",
]

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}


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
    smoothing_seconds: float = Field(0.0, ge=0, description="Trailing-mean window on the value; 0 = raw.")
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

    def thresholds(self, baseline: float | None) -> tuple[float, float] | None:
        """(fire, clear) thresholds; None for a relative rule without a baseline yet."""
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
        return baseline + sign * d_fire, baseline + sign * d_clear

    def fires(self, value: float, fire_th: float) -> bool:
        return value <= fire_th if self.comparison == "below" else value >= fire_th

    def clears(self, value: float, clear_th: float) -> bool:
        return value > clear_th if self.comparison == "below" else value < clear_th


class AlertEvent(BaseModel):
    """One alert notice. Times are in the engine's clock (seconds, as passed to update)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stream: str
    condition: str
    severity: Severity
    kind: Literal["start", "update", "resolved"]
    started_at: float = Field(..., description="Onset: first sample of the run that crossed the threshold.")
    at: float = Field(..., description="Time of this event.")
    duration: float = Field(..., description="at - started_at; for 'resolved' ended_at - started_at.")
    ended_at: float | None = Field(None, description="'resolved': when the clearing condition began.")
    key: str
    value: float = Field(..., description="The rule's (smoothed) value at this event.")
    peak: float = Field(..., description="Worst value seen during the alert.")
    threshold: float = Field(..., description="Effective firing threshold (baseline-derived for drops).")
    baseline: float | None = None
    score: float | None = None
    worst_regions: list[tuple[int, int, float]] = Field(default_factory=list)
    snapshot_jpeg: bytes | None = Field(None, repr=False)
    message: str = ""

    def to_record(self, include_snapshot: bool = True) -> dict[str, Any]:
        """JSON-safe dict (snapshot as base64 text under ``snapshot_jpeg_b64``)."""
        d = self.model_dump(exclude={"snapshot_jpeg"})
        d["worst_regions"] = [[int(r), int(c), float(s)] for r, c, s in self.worst_regions]
        for k in ("value", "peak", "threshold", "baseline", "score"):
            v = d.get(k)
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        if include_snapshot and self.snapshot_jpeg:
            d["snapshot_jpeg_b64"] = base64.b64encode(self.snapshot_jpeg).decode("ascii")
        return d


@dataclass
class AlertContext:
    """What an event should carry besides the rule's own value (all optional)."""

    score: float | None = None
    worst_regions: Sequence[tuple[int, int, float]] | None = None
    frame: np.ndarray | None = None  # uint8 RGB; thumbnailed only when an event is emitted
    snapshot_jpeg: bytes | None = None  # ready-made JPEG (takes precedence over frame)


def make_thumbnail_jpeg(frame_rgb: np.ndarray, max_size: int = 320, quality: int = 75) -> bytes:
    """Small JPEG of an RGB (or grey) uint8 frame, longest side at most ``max_size`` pixels."""
    from PIL import Image

    a = np.asarray(frame_rgb)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    img = Image.fromarray(a[..., :3] if a.ndim == 3 else a)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.thumbnail((max_size, max_size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# defaults
# ----------------------------------------------------------------------------------------------

def default_rules(settings: DetectorSettings | None = None) -> list[AlertRule]:
    """The default rule set. Durations of black/frozen come from ``settings`` (FFmpeg's 2 s).

    At 2 samples/s an injected black or frozen picture starts its alert 2.0-2.5 s after the
    onset, a quality step (e.g. 70 -> 30) 2.0-2.5 s after it, a stall 3 s after the last frame.
    The settings of ``quality_low``, ``blocky``, ``noisy``, ``corrupted``, ``overexposed`` and
    ``region_low`` come from measurements on injected degradations and clean clips
    (bench/degradations.py, docs/degradations.md).
    """
    s = settings or DetectorSettings()
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
        dict(condition="quality_drop", key="score", comparison="below", drop_points=20.0,
             clear_drop_points=10.0, baseline="median", baseline_seconds=300.0,
             baseline_min_seconds=30.0, smoothing_seconds=1.5, min_duration=1.0, clear_duration=3.0,
             severity="warning", cooldown=30.0, update_delta=10.0,
             description="Quality score 20 points below the stream's own 5-minute median."),
        # off by default: the worst map cell of clean footage is already 4-19 with the shipped
        # models (flat sky, dark areas), as low as on degraded pictures, so no threshold
        # separates them (docs/degradations.md); enable it per stream with a measured threshold
        dict(condition="region_low", key="worst_region", comparison="below", threshold=20.0,
             clear_threshold=30.0, smoothing_seconds=2.0, min_duration=3.0, clear_duration=5.0,
             severity="info", cooldown=60.0, enabled=False,
             description="Worst region of the quality map <= 20 (local damage, obstruction)."),
        dict(condition="black", key="black", comparison="above", threshold=s.black_ratio_threshold,
             clear_threshold=min(s.black_ratio_threshold, 0.95), min_duration=s.black_min_duration,
             clear_duration=1.0, severity="critical",
             description="Black picture: >= 98% of pixels below 0.10 luma for 2 s (FFmpeg blackdetect)."),
        dict(condition="frozen", key="frozen", comparison="above", threshold=0.5, clear_threshold=0.5,
             min_duration=s.freeze_min_duration, clear_duration=1.0, severity="critical",
             description="Frozen picture: change <= -60 dB with advancing timestamps for 2 s "
                         "(FFmpeg freezedetect)."),
        # on the decoded luma (source resolution) clean footage stays below 1.4 (95th percentile)
        # and MPEG-2 starved of bits reaches 1.8-2.9; 2.5 s so that a VP8 fade from black (its
        # first 1.5 s at 1.9-3.0: real blocking, but part of the programme) does not fire
        dict(condition="blocky", key="blockiness", comparison="above", threshold=1.8,
             clear_threshold=1.6, smoothing_seconds=2.0, min_duration=2.5, clear_duration=5.0,
             severity="warning", cooldown=60.0,
             description="8x8 block-boundary discontinuity ratio >= 1.8 (clean ~1.0-1.45)."),
        dict(condition="blurry", key="blur", comparison="above", drop_points=0.15, clear_drop_points=0.08,
             baseline="median", baseline_seconds=300.0, baseline_min_seconds=30.0,
             smoothing_seconds=3.0, min_duration=3.0, clear_duration=5.0, severity="warning",
             cooldown=60.0,
             description="Blur measure 0.15 above the stream's own 5-minute median (defocus, "
                         "fogged or smeared lens)."),
        # relative: sigma is measured on the downscaled detector frame, so the same noise reads
        # ~11 levels at 640 wide but ~3 on a 720p source (and clean footage 0-1.5)
        dict(condition="noisy", key="noise_sigma", comparison="above", drop_points=1.5,
             clear_drop_points=0.75, baseline="median", baseline_seconds=300.0,
             baseline_min_seconds=30.0, smoothing_seconds=2.0, min_duration=2.0, clear_duration=5.0,
             severity="info", cooldown=300.0,
             description="Noise sigma 1.5 levels (8-bit) above the stream's own 5-minute median."),
        # fraction of broken 16x16 macroblock edges (detectors.macroblock_edge_breaks), relative
        # so that graphics with hard edges on the grid (a ticker) become part of the baseline.
        # Clean footage 0-0.003, packet-loss smear and starved encoders 0.004-0.05
        dict(condition="corrupted", key="mb_edge_breaks", comparison="above", drop_points=0.004,
             clear_drop_points=0.002, baseline="median", baseline_seconds=300.0,
             baseline_min_seconds=30.0, smoothing_seconds=2.0, min_duration=1.5, clear_duration=5.0,
             severity="warning", cooldown=60.0, suppressed_by=["black", "frozen"],
             description="Broken macroblock edges 0.4 % above the stream's own 5-minute median "
                         "(packet loss smear, concealment, corrupted picture)."),
        dict(condition="decode_errors", key="decode_errors", comparison="above", threshold=3.0,
             clear_threshold=1.0, clear_duration=10.0, severity="warning", cooldown=60.0,
             update_interval=None,
             description="At least 3 undecodable packets or corrupt frames in 10 s (packet loss, "
                         "damaged stream)."),
        # exposure. Clipped white: clean footage 0-0.09 (a white bird in daylight), a washed
        # out or over-exposed picture 0.08-0.35 (docs/degradations.md)
        dict(condition="overexposed", key="clipped_highlights", comparison="above", threshold=0.15,
             clear_threshold=0.08, smoothing_seconds=2.0, min_duration=1.5, clear_duration=5.0,
             severity="warning", cooldown=60.0,
             description="At least 15 % of the picture clipped at white (over-exposure, gain or "
                         "level error)."),
        # average picture level; for the normal range of programme material (night scenes and
        # snow are legitimate) only long, gross departures: info
        dict(condition="too_dark", key="luma_mean", comparison="below", threshold=0.06,
             clear_threshold=0.08, smoothing_seconds=5.0, min_duration=10.0, clear_duration=5.0,
             severity="info", cooldown=300.0, update_interval=None, suppressed_by=["black"],
             description="Average picture level <= 6 % for 10 s (a black picture is 'black')."),
        dict(condition="too_bright", key="luma_mean", comparison="above", threshold=0.90,
             clear_threshold=0.85, smoothing_seconds=5.0, min_duration=10.0, clear_duration=5.0,
             severity="info", cooldown=300.0, update_interval=None,
             description="Average picture level >= 90 % for 10 s (white or washed-out picture)."),
        dict(condition="letterbox", key="letterbox", comparison="above", threshold=0.05,
             clear_threshold=0.02, min_duration=10.0, clear_duration=10.0, severity="info",
             cooldown=300.0, update_interval=None,
             description="Black bars cover >= 5% of the height (top + bottom)."),
        dict(condition="pillarbox", key="pillarbox", comparison="above", threshold=0.05,
             clear_threshold=0.02, min_duration=10.0, clear_duration=10.0, severity="info",
             cooldown=300.0, update_interval=None,
             description="Black bars cover >= 5% of the width (left + right)."),
        dict(condition="stall", key="stall_seconds", comparison="above", threshold=3.0,
             clear_threshold=1.0, critical_threshold=30.0, severity="warning", update_interval=10.0,
             value_is_age=True,
             description="No frame for 3 s (critical after 30 s); onset = the last frame."),
        dict(condition="fps_drop", key="fps_ratio", comparison="below", threshold=0.5,
             clear_threshold=0.8, min_duration=5.0, clear_duration=5.0, severity="warning",
             cooldown=60.0, description="Delivered frame rate below half the nominal rate for 5 s."),
        dict(condition="pts_jump", key="pts_jumps", comparison="above", threshold=1.0,
             clear_threshold=1.0, severity="info", cooldown=60.0, update_interval=None,
             description="Timestamp discontinuities in the last minute."),
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


# ----------------------------------------------------------------------------------------------
# engine
# ----------------------------------------------------------------------------------------------

@dataclass
class _RuleState:
    window: deque = field(default_factory=deque)  # (t, raw value) within smoothing_seconds
    base: deque = field(default_factory=deque)  # (t, raw value) for the median baseline
    ewma: float | None = None
    ewma_t: float | None = None
    base_first_t: float | None = None
    phase: str = "ok"  # ok | pending | active
    pending_since: float = 0.0
    onset: float = 0.0
    clearing_since: float | None = None
    severity: str = "info"
    peak: float = 0.0
    last_event_at: float = 0.0
    last_event_value: float = 0.0
    frozen_baseline: float | None = None
    cooldown_until: float = -math.inf

    def smoothed(self, t: float, v: float, seconds: float) -> float:
        self.window.append((t, v))
        while self.window and self.window[0][0] <= t - seconds:
            self.window.popleft()
        if len(self.window) == 1:
            return v
        return float(sum(x for _, x in self.window) / len(self.window))

    def baseline_value(self, rule: AlertRule, t: float) -> float | None:
        if self.base_first_t is None or t - self.base_first_t < rule.baseline_min_seconds:
            return None
        if rule.baseline == "ewma":
            return self.ewma
        if not self.base:
            return None
        return float(np.median([x for _, x in self.base]))

    def learn(self, rule: AlertRule, t: float, v: float) -> None:
        if rule.baseline == "ewma":
            if self.ewma is None or self.ewma_t is None:
                self.ewma = v
            else:
                a = 1.0 - math.exp(-max(t - self.ewma_t, 0.0) / rule.baseline_seconds)
                self.ewma += a * (v - self.ewma)
            self.ewma_t = t
        else:
            self.base.append((t, v))
            while self.base and self.base[0][0] < t - rule.baseline_seconds:
                self.base.popleft()
        if self.base_first_t is None:
            self.base_first_t = t
        elif rule.baseline == "median" and self.base:
            # after a long alert the old samples aged out: history restarts with what is left
            self.base_first_t = max(self.base_first_t, self.base[0][0])


class AlertEngine:
    """Alert state for many streams. Not thread-safe: call from one thread (or lock)."""

    def __init__(self, rules: Iterable[AlertRule] | None = None,
                 stream_rules: Mapping[str, Iterable[AlertRule]] | None = None,
                 snapshots: bool = True, snapshot_max_size: int = 320) -> None:
        self.rules: list[AlertRule] = list(rules) if rules is not None else default_rules()
        self._stream_rules: dict[str, list[AlertRule]] = {k: list(v) for k, v in (stream_rules or {}).items()}
        self._states: dict[str, dict[str, _RuleState]] = {}
        self.snapshots = snapshots
        self.snapshot_max_size = snapshot_max_size

    # -- configuration ----------------------------------------------------------------------
    def rules_for(self, stream: str) -> list[AlertRule]:
        return self._stream_rules.get(stream, self.rules)

    def set_stream_rules(self, stream: str, rules: Iterable[AlertRule] | None, t: float | None = None
                         ) -> list[AlertEvent]:
        """Replace a stream's rules (None: back to the engine's). Active alerts whose rule
        changed or vanished are resolved (events returned) and their state reset."""
        old = {r.condition: r for r in self.rules_for(stream)}
        if rules is None:
            self._stream_rules.pop(stream, None)
        else:
            self._stream_rules[stream] = list(rules)
        new = {r.condition: r for r in self.rules_for(stream)}
        events: list[AlertEvent] = []
        states = self._states.get(stream, {})
        for cond in list(states):
            if new.get(cond) != old.get(cond):
                st = states.pop(cond)
                if st.phase == "active" and cond in old:
                    events.append(self._resolved(stream, old[cond], st, t, "rule changed"))
        return events

    # -- main entry ---------------------------------------------------------------------------
    def update(self, stream: str, values: Mapping[str, float], t: float,
               context: AlertContext | Mapping[str, Any] | None = None) -> list[AlertEvent]:
        """Feed one sample of a stream; returns the events it caused (often none)."""
        t = float(t)
        ctx = self._context(context, values)
        states = self._states.setdefault(stream, {})
        events: list[AlertEvent] = []
        for rule in self.rules_for(stream):
            if not rule.enabled:
                continue
            raw = values.get(rule.key)
            if raw is None:
                continue
            try:
                v = float(raw)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
            st = states.get(rule.condition)
            if st is None:
                st = states[rule.condition] = _RuleState(severity=rule.severity)
            if st.phase != "active" and any(
                    c in states and states[c].phase == "active" for c in rule.suppressed_by):
                st.phase, st.frozen_baseline = "ok", None  # (nor does it learn from such samples)
                continue
            ev = self._step(stream, rule, st, v, t, ctx)
            if ev is not None:
                events.append(ev)
        if events and ctx is not None:
            self._attach(events, ctx)
        return events

    def _step(self, stream: str, rule: AlertRule, st: _RuleState, v: float, t: float,
              ctx: AlertContext | None) -> AlertEvent | None:
        val = st.smoothed(t, v, rule.smoothing_seconds) if rule.smoothing_seconds > 0 else v
        if rule.smoothing_seconds <= 0:
            st.window.clear()
            st.window.append((t, v))
        if rule.relative:
            baseline = st.frozen_baseline if st.phase != "ok" else st.baseline_value(rule, t)
        else:
            baseline = None
        th = rule.thresholds(baseline)
        if th is None:  # relative rule still learning
            st.learn(rule, t, v)
            return None
        fire_th, clear_th = th

        if st.phase == "ok":
            if not rule.fires(val, fire_th):
                if rule.relative:
                    st.learn(rule, t, v)
                return None
            st.phase = "pending"
            st.pending_since = t
            st.frozen_baseline = baseline
            # onset: start of the run of raw samples (within the smoothing window) that crossed
            onset = t
            for ts, x in reversed(st.window):
                if not rule.fires(x, fire_th):
                    break
                onset = ts
            if rule.value_is_age:
                onset = min(onset, t - max(v, 0.0))
            st.onset = onset
            st.peak = val

        if st.phase == "pending":
            if not rule.fires(val, fire_th):
                st.phase = "ok"
                st.frozen_baseline = None
                return None
            st.peak = self._worse(rule, st.peak, val)
            if t - st.pending_since + 1e-9 < rule.min_duration or t < st.cooldown_until:
                return None
            st.phase = "active"
            st.severity = self._severity(rule, val, rule.severity)
            st.clearing_since = None
            return self._event(stream, rule, st, "start", t, val, fire_th, baseline)

        # active
        st.peak = self._worse(rule, st.peak, val)
        if rule.clears(val, clear_th):
            if st.clearing_since is None:
                st.clearing_since = t
            if t - st.clearing_since + 1e-9 >= rule.clear_duration:
                return self._resolved(stream, rule, st, t, "", val, fire_th, baseline)
            return None
        st.clearing_since = None
        sev = self._severity(rule, val, st.severity)
        changed = sev != st.severity
        st.severity = sev
        due = rule.update_interval is not None and t - st.last_event_at >= rule.update_interval
        moved = rule.update_delta is not None and abs(val - st.last_event_value) >= rule.update_delta
        if changed or due or moved:
            msg = "severity raised" if changed else ("value changed" if moved else "")
            return self._event(stream, rule, st, "update", t, val, fire_th, baseline, msg)
        return None

    @staticmethod
    def _worse(rule: AlertRule, a: float, b: float) -> float:
        return min(a, b) if rule.comparison == "below" else max(a, b)

    @staticmethod
    def _severity(rule: AlertRule, val: float, current: str) -> str:
        sev = current
        if rule.critical_threshold is not None and rule.fires(val, rule.critical_threshold):
            sev = "critical"
        return sev if _SEV_RANK[sev] >= _SEV_RANK[current] else current

    def _event(self, stream: str, rule: AlertRule, st: _RuleState, kind: str, t: float, val: float,
               fire_th: float, baseline: float | None, message: str = "") -> AlertEvent:
        st.last_event_at = t
        st.last_event_value = val
        if not message:
            message = self._message(stream, rule, kind, val, fire_th, baseline)
        return AlertEvent(stream=stream, condition=rule.condition, severity=st.severity, kind=kind,
                          started_at=st.onset, at=t, duration=max(0.0, t - st.onset), key=rule.key,
                          value=val, peak=st.peak, threshold=fire_th, baseline=baseline, message=message)

    def _resolved(self, stream: str, rule: AlertRule, st: _RuleState, t: float | None, message: str,
                  val: float | None = None, fire_th: float | None = None,
                  baseline: float | None = None) -> AlertEvent:
        at = t if t is not None else st.last_event_at
        ended = st.clearing_since if st.clearing_since is not None else at
        if fire_th is None:
            th = rule.thresholds(st.frozen_baseline)
            fire_th = th[0] if th else float("nan")
        if val is None:
            val = st.window[-1][1] if st.window else float("nan")
        ev = AlertEvent(stream=stream, condition=rule.condition, severity=st.severity, kind="resolved",
                        started_at=st.onset, at=at, ended_at=ended, duration=max(0.0, ended - st.onset),
                        key=rule.key, value=val, peak=st.peak, threshold=fire_th,
                        baseline=baseline if baseline is not None else st.frozen_baseline,
                        message=message or f"{rule.condition} on {stream} resolved after "
                                           f"{max(0.0, ended - st.onset):.1f} s")
        st.phase = "ok"
        st.frozen_baseline = None
        st.clearing_since = None
        st.cooldown_until = at + rule.cooldown
        st.severity = rule.severity
        return ev

    @staticmethod
    def _message(stream: str, rule: AlertRule, kind: str, val: float, fire_th: float,
                 baseline: float | None) -> str:
        rel = f" (baseline {baseline:.3g})" if baseline is not None else ""
        word = "<=" if rule.comparison == "below" else ">="
        head = {"start": "", "update": "still "}.get(kind, "")
        return f"{rule.condition} on {stream}: {head}{rule.key}={val:.3g} {word} {fire_th:.3g}{rel}"

    # -- context / snapshots --------------------------------------------------------------------
    @staticmethod
    def _context(context: AlertContext | Mapping[str, Any] | None, values: Mapping[str, float]
                 ) -> AlertContext:
        if context is None:
            ctx = AlertContext()
        elif isinstance(context, AlertContext):
            ctx = context
        else:
            ctx = AlertContext(**{k: context.get(k) for k in ("score", "worst_regions", "frame", "snapshot_jpeg")})
        if ctx.score is None and values.get("score") is not None:
            ctx = AlertContext(score=values.get("score"), worst_regions=ctx.worst_regions,
                               frame=ctx.frame, snapshot_jpeg=ctx.snapshot_jpeg)
        return ctx

    def _attach(self, events: list[AlertEvent], ctx: AlertContext) -> None:
        score = None
        if ctx.score is not None:
            try:
                score = float(ctx.score)
                if not math.isfinite(score):
                    score = None
            except (TypeError, ValueError):
                score = None
        regions = [(int(r), int(c), float(s)) for r, c, s in (ctx.worst_regions or [])]
        jpeg = ctx.snapshot_jpeg
        for ev in events:
            ev.score = score
            ev.worst_regions = list(regions)
            if ev.kind != "resolved" and self.snapshots:
                if jpeg is None and ctx.frame is not None:
                    jpeg = make_thumbnail_jpeg(ctx.frame, self.snapshot_max_size)
                ev.snapshot_jpeg = jpeg

    # -- state queries ------------------------------------------------------------------------
    def active(self) -> set[tuple[str, str, str]]:
        """Active alerts as ``(stream, condition, severity)``."""
        return {(stream, cond, st.severity)
                for stream, states in self._states.items()
                for cond, st in states.items() if st.phase == "active"}

    def active_events(self) -> list[dict[str, Any]]:
        """Active alerts with onset, severity and peak (for a status page)."""
        out = []
        for stream, states in self._states.items():
            for cond, st in states.items():
                if st.phase == "active":
                    out.append({"stream": stream, "condition": cond, "severity": st.severity,
                                "started_at": st.onset, "peak": st.peak})
        return out

    def remove_stream(self, stream: str, t: float | None = None, reason: str = "stream removed"
                      ) -> list[AlertEvent]:
        """Forget a stream; its active alerts come back as 'resolved' events."""
        states = self._states.pop(stream, {})
        rules = {r.condition: r for r in self.rules_for(stream)}
        self._stream_rules.pop(stream, None)
        return [self._resolved(stream, rules[c], st, t, reason) for c, st in states.items()
                if st.phase == "active" and c in rules]
