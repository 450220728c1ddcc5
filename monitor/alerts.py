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
  degradation does not become its own baseline). A relative rule can fire once its baseline
  is ``baseline_min_seconds`` old; until ``warmup_seconds`` the required deviation is larger
  (``warmup_factor`` times it, falling linearly to 1), with ``mad_factor`` it is at least that
  many robust sigmas of the baseline (1.4826 x MAD), and with ``confirm`` the rule starts
  only while another key (e.g. the blur for a score drop) has moved its own way from its own
  baseline (:mod:`monitor.alert_state`);
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

Rules are data (:mod:`monitor.alert_rules`, re-exported here): :func:`default_rules` gives the
defaults, among them the gross-damage rules that need no baseline (:mod:`monitor.gross_rules`),
:func:`merge_rules` applies overrides (e.g. a stream's YAML ``alerts:`` section) to them.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from monitor.alert_rules import DEFAULT_RULES, SEVERITIES, AlertRule, Confirm, default_rules, merge_rules
from monitor.alert_state import RuleState

__all__ = [
    "AlertRule",
    "Confirm",
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
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}


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
    frame_size: tuple[int, int] | None = None  # (width, height) of the source: ``frame`` may be squeezed
    snapshot_jpeg: bytes | None = None  # ready-made JPEG (takes precedence over frame)


def make_thumbnail_jpeg(frame_rgb: np.ndarray, max_size: int = 320, quality: int = 75,
                        frame_size: tuple[int, int] | None = None) -> bytes:
    """Small JPEG of an RGB (or grey) uint8 frame, longest side at most ``max_size`` pixels;
    with ``frame_size`` (the source's width, height) a frame squeezed to a square (the
    workers' pictures) gets its aspect ratio back, ``max_size`` on its longest side."""
    from PIL import Image

    a = np.asarray(frame_rgb)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    img = Image.fromarray(a[..., :3] if a.ndim == 3 else a)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if frame_size:
        w, h = (max(1, int(v)) for v in frame_size)
        scale = max_size / max(w, h)
        img = img.resize((max(2, round(w * scale)), max(2, round(h * scale))), Image.BILINEAR)
    img.thumbnail((max_size, max_size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# engine
# ----------------------------------------------------------------------------------------------

class AlertEngine:
    """Alert state for many streams. Not thread-safe: call from one thread (or lock)."""

    def __init__(self, rules: Iterable[AlertRule] | None = None,
                 stream_rules: Mapping[str, Iterable[AlertRule]] | None = None,
                 snapshots: bool = True, snapshot_max_size: int = 320) -> None:
        self.rules: list[AlertRule] = list(rules) if rules is not None else default_rules()
        self._stream_rules: dict[str, list[AlertRule]] = {k: list(v) for k, v in (stream_rules or {}).items()}
        self._states: dict[str, dict[str, RuleState]] = {}
        self._latest: dict[str, dict[str, float]] = {}  # per stream: the last finite value of each key
        self.snapshots = snapshots
        self.snapshot_max_size = snapshot_max_size

    # -- configuration ----------------------------------------------------------------------
    def rules_for(self, stream: str) -> list[AlertRule]:
        return self._stream_rules.get(stream, self.rules)

    # -- main entry ---------------------------------------------------------------------------
    def update(self, stream: str, values: Mapping[str, float], t: float,
               context: AlertContext | Mapping[str, Any] | None = None) -> list[AlertEvent]:
        """Feed one sample of a stream; returns the events it caused (often none)."""
        t = float(t)
        ctx = self._context(context, values)
        states = self._states.setdefault(stream, {})
        latest = self._latest.setdefault(stream, {})
        for k, x in values.items():
            try:
                x = float(x)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                latest[k] = x
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
                st = states[rule.condition] = RuleState(severity=rule.severity)
            if st.phase != "active" and any(
                    c in states and states[c].phase == "active" for c in rule.suppressed_by):
                st.phase, st.frozen_baseline = "ok", None  # (nor does it learn from such samples)
                continue
            ev = self._step(stream, rule, st, v, t, ctx, latest)
            if ev is not None:
                events.append(ev)
        if events and ctx is not None:
            self._attach(events, ctx)
        return events

    def _step(self, stream: str, rule: AlertRule, st: RuleState, v: float, t: float,
              ctx: AlertContext | None, latest: dict[str, float]) -> AlertEvent | None:
        val = st.smoothed(t, v, rule.smoothing_seconds, rule.smoothing_statistic) if rule.smoothing_seconds > 0 else v
        if rule.smoothing_seconds <= 0:
            st.window.clear()
            st.window.append((t, v))
        baseline, scale = None, (1.0, 0.0)
        if rule.relative:
            if st.phase != "ok":
                baseline, scale = st.frozen_baseline, st.frozen_scale
            else:
                b = st.baseline(rule, t)
                if b is not None:
                    baseline, scale = b[0], (b[1], b[2])
        th = rule.thresholds(baseline, *scale)
        if th is None:  # relative rule still learning
            st.learn(rule, t, v, latest)
            return None
        fire_th, clear_th = th
        # a relative rule with confirming keys fires only while one of them confirms
        firing = rule.fires(val, fire_th) and (st.phase == "active" or st.confirmed(rule, latest))

        if st.phase == "ok":
            if not firing:
                if rule.relative:
                    st.learn(rule, t, v, latest)
                return None
            st.phase = "pending"
            st.pending_since = t
            st.frozen_baseline = baseline
            st.frozen_scale = scale
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
            if not firing:
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

    def _event(self, stream: str, rule: AlertRule, st: RuleState, kind: str, t: float, val: float,
               fire_th: float, baseline: float | None, message: str = "") -> AlertEvent:
        st.last_event_at = t
        st.last_event_value = val
        if not message:
            message = self._message(stream, rule, kind, val, fire_th, baseline)
        return AlertEvent(stream=stream, condition=rule.condition, severity=st.severity, kind=kind,
                          started_at=st.onset, at=t, duration=max(0.0, t - st.onset), key=rule.key,
                          value=val, peak=st.peak, threshold=fire_th, baseline=baseline, message=message)

    def _resolved(self, stream: str, rule: AlertRule, st: RuleState, t: float | None, message: str,
                  val: float | None = None, fire_th: float | None = None,
                  baseline: float | None = None) -> AlertEvent:
        at = t if t is not None else st.last_event_at
        ended = st.clearing_since if st.clearing_since is not None else at
        if fire_th is None:
            th = rule.thresholds(st.frozen_baseline, *st.frozen_scale)
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
            ctx = AlertContext(**{k: context.get(k) for k in ("score", "worst_regions", "frame", "frame_size",
                                                              "snapshot_jpeg")})
        if ctx.score is None and values.get("score") is not None:
            ctx = dataclasses.replace(ctx, score=values.get("score"))
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
                    jpeg = make_thumbnail_jpeg(ctx.frame, self.snapshot_max_size, frame_size=ctx.frame_size)
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
        self._latest.pop(stream, None)
        rules = {r.condition: r for r in self.rules_for(stream)}
        self._stream_rules.pop(stream, None)
        return [self._resolved(stream, rules[c], st, t, reason) for c, st in states.items()
                if st.phase == "active" and c in rules]
