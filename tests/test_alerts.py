"""Alert engine (monitor/alerts.py): durations, hysteresis, cooldown, baselines, severities."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from monitor.alerts import (
    DEFAULT_RULES,
    AlertContext,
    AlertEngine,
    AlertRule,
    default_rules,
    make_thumbnail_jpeg,
    merge_rules,
)

DT = 0.5  # 2 samples/s


def run(engine: AlertEngine, key: str, values, t0: float = 0.0, stream: str = "cam1", dt: float = DT,
        context=None):
    events = []
    for i, v in enumerate(values):
        events += engine.update(stream, {key: v}, t0 + i * dt, context)
    return events


def kinds(events):
    return [(e.kind, e.at) for e in events]


def rule(**kw) -> AlertRule:
    base = dict(condition="c", key="x", comparison="above", threshold=1.0, update_interval=None)
    base.update(kw)
    return AlertRule(**base)


# -- min_duration / onset ---------------------------------------------------------------------------

def test_min_duration_and_onset():
    eng = AlertEngine([rule(min_duration=2.0)])
    # 1.5 s above the threshold: nothing
    ev = run(eng, "x", [0] * 4 + [2] * 4 + [0] * 4)
    assert ev == []
    # 2.0 s: start at onset + 2 s, reporting the onset
    ev = run(eng, "x", [0] * 4 + [2] * 8, t0=100.0)
    assert len(ev) == 1 and ev[0].kind == "start"
    assert ev[0].started_at == pytest.approx(102.0)
    assert ev[0].at == pytest.approx(104.0)
    assert ev[0].duration == pytest.approx(2.0)
    assert ev[0].threshold == 1.0 and ev[0].value == 2.0
    assert eng.active() == {("cam1", "c", "warning")}


def test_onset_reported_before_smoothing_catches_up():
    eng = AlertEngine([rule(comparison="below", threshold=40, smoothing_seconds=2.0, min_duration=1.0)])
    ev = run(eng, "x", [70] * 10 + [20] * 10)
    start = [e for e in ev if e.kind == "start"][0]
    # the raw values crossed at t=5.0; the smoothed value later
    assert start.started_at == pytest.approx(5.0)
    assert start.at > 5.0 + 1.0


# -- hysteresis ------------------------------------------------------------------------------------

def test_hysteresis_prevents_flapping():
    # values oscillate between the clear and the fire thresholds, crossing the fire threshold
    wave = [0.2] * 4 + [1.2, 0.7, 1.3, 0.6, 1.1, 0.8] * 6 + [0.2] * 4
    flappy = AlertEngine([rule(threshold=1.0)])  # clear == fire threshold
    steady = AlertEngine([rule(threshold=1.0, clear_threshold=0.5)])
    ev_f = run(flappy, "x", wave)
    ev_s = run(steady, "x", wave)
    assert sum(e.kind == "start" for e in ev_f) >= 10
    assert [e.kind for e in ev_s] == ["start", "resolved"]
    # resolves only once below the clear threshold
    assert ev_s[1].ended_at == pytest.approx((4 + 36) * DT)


def test_clear_duration():
    eng = AlertEngine([rule(clear_threshold=0.5, clear_duration=2.0)])
    ev = run(eng, "x", [2] * 4 + [0] * 3 + [2] * 2 + [0] * 6)
    assert [e.kind for e in ev] == ["start", "resolved"]
    res = ev[1]
    assert res.ended_at == pytest.approx(4.5)  # the clearing run that lasted
    assert res.at == pytest.approx(6.5)
    assert res.duration == pytest.approx(4.5)


def test_resolved_event_carries_duration_and_peak():
    eng = AlertEngine([rule(min_duration=1.0, clear_threshold=0.8)])
    ev = run(eng, "x", [0, 0, 1.5, 3.0, 2.0, 1.2, 0.5, 0.5], t0=10.0)
    start, res = ev
    assert start.kind == "start" and res.kind == "resolved"
    assert start.started_at == res.started_at == pytest.approx(11.0)
    assert res.ended_at == pytest.approx(13.0)
    assert res.duration == pytest.approx(2.0)
    assert res.peak == 3.0
    assert eng.active() == set()


# -- cooldown ------------------------------------------------------------------------------------

def test_cooldown_delays_a_new_start():
    eng = AlertEngine([rule(cooldown=10.0)])
    ev = run(eng, "x", [2, 2, 0] + [0] * 3 + [2] * 20)  # resolve at 1.0, re-fire at 3.0
    starts = [e for e in ev if e.kind == "start"]
    assert [e.kind for e in ev][:2] == ["start", "resolved"]
    assert len(starts) == 2
    assert starts[1].at == pytest.approx(11.0)  # resolved at 1.0 + 10 s cooldown
    assert starts[1].started_at == pytest.approx(3.0)  # real onset kept
    # a condition that went away during the cooldown does not start afterwards
    eng = AlertEngine([rule(cooldown=10.0)])
    ev = run(eng, "x", [2, 0, 2, 2, 0] + [0] * 30)
    assert [e.kind for e in ev] == ["start", "resolved"]


# -- baseline-relative rules --------------------------------------------------------------------------

def _drop_rule(**kw):
    base = dict(condition="drop", key="score", comparison="below", drop_points=20.0, clear_drop_points=10.0,
                baseline_seconds=120.0, baseline_min_seconds=30.0, smoothing_seconds=1.5, min_duration=1.0,
                update_interval=None)
    base.update(kw)
    return AlertRule(**base)


@pytest.mark.parametrize("method", ["median", "ewma"])
def test_baseline_relative_drop(method):
    rng = np.random.default_rng(0)
    eng = AlertEngine([_drop_rule(baseline=method)])
    good = list(70 + rng.normal(0, 3, 120))  # 60 s around 70
    bad = list(45 + rng.normal(0, 3, 60))  # 30 s around 45 (a 25-point drop)
    ev = run(eng, "score", good + bad + good[:40])
    assert [e.kind for e in ev] == ["start", "resolved"]
    start, res = ev
    assert start.baseline == pytest.approx(70, abs=2)
    assert start.threshold == pytest.approx(start.baseline - 20)
    assert start.at - 60.0 <= 3.0  # detected within 3 s of the drop
    assert res.duration == pytest.approx(30.0, abs=2.0)
    # a stream that is always at 45 has no drop
    eng2 = AlertEngine([_drop_rule(baseline=method)])
    assert run(eng2, "score", list(45 + rng.normal(0, 3, 200))) == []


def test_baseline_needs_history_and_is_frozen_while_active():
    eng = AlertEngine([_drop_rule()])
    # only 20 s of history: no baseline yet, the drop is not judged
    ev = run(eng, "score", [70] * 40 + [40] * 20)
    assert ev == []
    eng = AlertEngine([_drop_rule()])
    # a long degradation (5 minutes > baseline window) stays active: the baseline does not learn it
    ev = run(eng, "score", [70] * 120 + [40] * 600)
    assert [e.kind for e in ev] == ["start"]
    assert eng.active() == {("cam1", "drop", "warning")}
    ev = run(eng, "score", [68] * 10, t0=360.0)
    assert [e.kind for e in ev] == ["resolved"]


def test_drop_ratio_and_rise_rules():
    eng = AlertEngine([_drop_rule(drop_points=None, clear_drop_points=None, drop_ratio=0.3,
                                  clear_drop_ratio=0.1)])
    ev = run(eng, "score", [80] * 100 + [50] * 10)  # 37.5% drop
    assert [e.kind for e in ev] == ["start"]
    assert ev[0].threshold == pytest.approx(56.0)
    # "above" relative rule: blur rising above its baseline
    blur = AlertRule(condition="blurry", key="blur", comparison="above", drop_points=0.15,
                     clear_drop_points=0.08, baseline_min_seconds=30, update_interval=None)
    eng = AlertEngine([blur])
    ev = run(eng, "blur", [0.40] * 80 + [0.50] * 10 + [0.62] * 10 + [0.45] * 4)
    assert [e.kind for e in ev] == ["start", "resolved"]
    assert ev[0].started_at == pytest.approx(45.0)


# -- severity and updates --------------------------------------------------------------------------

def test_severity_escalates_and_never_flaps_down():
    eng = AlertEngine([rule(comparison="below", threshold=40, clear_threshold=45, critical_threshold=20,
                            update_interval=None)])
    ev = run(eng, "x", [60, 35, 30, 15, 30, 18, 30, 50])
    assert [(e.kind, e.severity) for e in ev] == [
        ("start", "warning"), ("update", "critical"), ("resolved", "critical")]
    assert ev[1].message == "severity raised"
    # a condition that starts beyond the critical threshold starts critical
    eng = AlertEngine([rule(comparison="below", threshold=40, critical_threshold=20)])
    ev = run(eng, "x", [10])
    assert ev[0].severity == "critical"
    assert eng.active() == {("cam1", "c", "critical")}


def test_periodic_and_value_updates():
    eng = AlertEngine([rule(update_interval=5.0)])
    ev = run(eng, "x", [2] * 31)  # 15 s active
    assert [e.kind for e in ev] == ["start", "update", "update", "update"]
    assert [e.at for e in ev] == pytest.approx([0.0, 5.0, 10.0, 15.0])
    eng = AlertEngine([rule(update_delta=1.0)])
    ev = run(eng, "x", [2, 2.5, 3.1, 3.2, 5])
    assert [(e.kind, e.value) for e in ev] == [("start", 2), ("update", 3.1), ("update", 5)]


def test_missing_and_nan_values_are_no_data():
    eng = AlertEngine([rule(min_duration=1.0)])
    ev = eng.update("cam1", {"x": 2.0}, 0.0)
    ev += eng.update("cam1", {"x": float("nan")}, 0.5)
    ev += eng.update("cam1", {"other": 1.0}, 0.7)
    ev += eng.update("cam1", {"x": 2.0}, 1.0)
    assert [e.kind for e in ev] == ["start"]
    # nan while active neither resolves nor updates
    assert eng.update("cam1", {"x": math.nan}, 5.0) == []
    assert eng.active() == {("cam1", "c", "warning")}


# -- streams, rules per stream ---------------------------------------------------------------------

def test_streams_are_independent_and_can_be_removed():
    eng = AlertEngine([rule()])
    eng.update("a", {"x": 2}, 0.0)
    eng.update("b", {"x": 0}, 0.0)
    assert eng.active() == {("a", "c", "warning")}
    ev = eng.remove_stream("a", 3.0)
    assert [(e.kind, e.stream, e.duration) for e in ev] == [("resolved", "a", 3.0)]
    assert eng.active() == set()


def test_per_stream_rules_and_merge():
    base = default_rules()
    cam2 = merge_rules(base, {"quality_low": {"enabled": True, "threshold": 50}, "frozen": {"enabled": False},
                              "black": None,
                              "dark": {"key": "black", "comparison": "above", "threshold": 0.5,
                                       "severity": "info"}})
    by = {r.condition: r for r in cam2}
    assert by["quality_low"].threshold == 50 and by["quality_low"].clear_threshold == 55  # gap kept
    assert by["quality_low"].enabled and not {r.condition: r for r in base}["quality_low"].enabled
    assert not by["frozen"].enabled and not by["black"].enabled
    assert by["dark"].severity == "info"
    assert {r.condition for r in base} <= set(by)
    eng = AlertEngine(base, stream_rules={"cam2": cam2})
    for i in range(10):
        eng.update("cam1", {"score": 45.0, "frozen": 1.0}, i * 0.5)
        eng.update("cam2", {"score": 45.0, "frozen": 1.0}, i * 0.5)
    assert eng.active() == {("cam1", "frozen", "critical"), ("cam2", "quality_low", "warning")}
    # list form, and errors for unknown fields or incomplete new rules
    lst = merge_rules(base, [{"condition": "stall", "threshold": 10}])
    assert {r.condition: r for r in lst}["stall"].threshold == 10
    with pytest.raises(ValidationError):
        merge_rules(base, {"black": {"treshold": 0.9}})
    with pytest.raises(ValidationError):
        merge_rules(base, {"newthing": {"threshold": 1}})
    # changing a rule's kind: absolute -> relative
    rel = {r.condition: r for r in merge_rules(base, {"blocky": {"drop_points": 0.5}})}["blocky"]
    assert rel.relative and rel.threshold is None


def test_rule_validation():
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="below")  # no threshold
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="below", threshold=1, drop_points=2)
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="below", threshold=40, clear_threshold=30)
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="above", threshold=1, clear_threshold=2)
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="below", drop_points=10, clear_drop_points=20)
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="below", threshold=1, severity="fatal")


# -- context: score, regions, snapshots ------------------------------------------------------------

def test_events_carry_context_and_a_small_snapshot():
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, :640] = 200
    ctx = AlertContext(score=31.5, worst_regions=[(2, 3, 12.0), (0, 1, 20.5)], frame=frame)
    eng = AlertEngine([rule(clear_threshold=0.5)])
    ev = eng.update("cam1", {"x": 2.0}, 0.0, ctx)
    ev += eng.update("cam1", {"x": 0.0}, 1.0, ctx)
    start, res = ev
    assert start.score == 31.5 and start.worst_regions == [(2, 3, 12.0), (0, 1, 20.5)]
    img = Image.open(io.BytesIO(start.snapshot_jpeg))
    assert img.format == "JPEG" and max(img.size) <= 320 and img.size == (320, 180)
    assert res.snapshot_jpeg is None
    rec = start.to_record()
    json.dumps(rec)  # JSON-safe
    assert rec["worst_regions"] == [[2, 3, 12.0], [0, 1, 20.5]]
    assert "snapshot_jpeg_b64" in rec and "snapshot_jpeg" not in rec
    # mapping context, score taken from the values when not given
    eng = AlertEngine([rule()])
    ev = eng.update("cam1", {"x": 2.0, "score": 55.0}, 0.0, {"worst_regions": [(0, 0, 1.0)]})
    assert ev[0].score == 55.0 and ev[0].snapshot_jpeg is None
    assert "snapshot_jpeg_b64" not in ev[0].to_record()


def test_thumbnail_helper():
    big = (np.random.default_rng(0).integers(0, 255, (1080, 1920, 3))).astype(np.uint8)
    img = Image.open(io.BytesIO(make_thumbnail_jpeg(big)))
    assert img.size == (320, 180)
    tall = np.zeros((500, 100, 3), np.uint8)
    assert Image.open(io.BytesIO(make_thumbnail_jpeg(tall, max_size=200))).size == (40, 200)
    small = np.zeros((100, 150, 3), np.uint8)
    assert Image.open(io.BytesIO(make_thumbnail_jpeg(small))).size == (150, 100)  # never upscaled


# -- defaults ------------------------------------------------------------------------------------------

def test_default_rules_are_data_and_cover_the_conditions():
    names = {r.condition for r in DEFAULT_RULES}
    assert {"quality_low", "quality_drop", "black", "frozen", "blocky", "blurry", "stall"} <= names
    by = {r.condition: r for r in DEFAULT_RULES}
    assert by["black"].min_duration == 2.0 and by["frozen"].min_duration == 2.0  # FFmpeg's d=2
    assert by["black"].threshold == 0.98
    # round-trip as plain data (what a YAML file holds)
    again = [AlertRule.model_validate(json.loads(json.dumps(r.model_dump()))) for r in DEFAULT_RULES]
    assert again == list(DEFAULT_RULES)


@pytest.mark.parametrize("key,good,bad,condition", [
    ("score", 72.0, 30.0, "quality_drop"),
    ("mb_edge_breaks", 0.0005, 0.02, "corrupted"),
    ("clipped_highlights", 0.01, 0.3, "overexposed"),
    ("decode_errors", 0.0, 5.0, "decode_errors"),
    ("black", 0.02, 1.0, "black"),
    ("frozen", 0.0, 1.0, "frozen"),
    ("stall_seconds", 0.0, None, "stall"),
])
def test_default_rules_detect_injected_degradation_within_3s(key, good, bad, condition):
    """At 2 samples/s a degradation injected at t=60 s starts its alert within 3 s."""
    eng = AlertEngine()
    rng = np.random.default_rng(1)
    onset = 60.0
    first = None
    for i in range(160):
        t = i * DT
        if key == "score":
            v = (good if t < onset else bad) + rng.normal(0, 2)
        elif key == "stall_seconds":
            v = 0.0 if t < onset else t - onset  # the timing detector's stall clock
        else:
            v = good if t < onset else bad
        for ev in eng.update("cam1", {key: v}, t):
            if ev.kind == "start":
                assert ev.condition in (condition, "quality_drop"), ev
                first = first or ev
    assert first is not None
    assert first.at - onset <= 3.0 + 1e-9, first
    assert first.started_at == pytest.approx(onset, abs=1.0)


def test_quality_low_is_off_by_default_and_quality_drop_is_relative():
    """Clean content can score 20-40 all along (docs/degradations.md): no default absolute
    quality alarm; a stream that always scores 25 does not alarm, one that falls from 45 to
    20 does."""
    for level, after, expect in ((25.0, 25.0, set()), (45.0, 20.0, {"quality_drop"})):
        eng = AlertEngine()
        rng = np.random.default_rng(2)
        started = set()
        for i in range(200):
            t = i * DT
            v = (level if t < 60 else after) + rng.normal(0, 3)
            started |= {e.condition for e in eng.update("cam1", {"score": v}, t) if e.kind == "start"}
        assert started == expect, (level, after, started)


def test_suppressed_by_one_cause_one_alert():
    """A black picture is 'black', not also 'too_dark'; a dark (not black) picture is too_dark."""
    def run_(values):
        eng = AlertEngine()
        out = []
        for i in range(80):
            out += [e.condition for e in eng.update("cam1", values, i * DT) if e.kind == "start"]
        return out
    assert run_({"black": 1.0, "luma_mean": 0.0}) == ["black"]
    assert run_({"black": 0.5, "luma_mean": 0.04}) == ["too_dark"]
    # an active alert of the suppressed rule itself goes on
    r = [AlertRule(condition="a", key="x", comparison="above", threshold=1.0),
         AlertRule(condition="b", key="y", comparison="above", threshold=1.0, suppressed_by=["a"])]
    eng = AlertEngine(r)
    eng.update("cam1", {"x": 0.0, "y": 2.0}, 0.0)
    eng.update("cam1", {"x": 2.0, "y": 2.0}, 1.0)
    assert eng.active() == {("cam1", "a", "warning"), ("cam1", "b", "warning")}


def test_configuring_a_rule_that_is_off_by_default_turns_it_on():
    from monitor.alerts import DEFAULT_RULES, merge_rules
    default = {r.condition: r for r in DEFAULT_RULES}
    assert not default["quality_low"].enabled
    merged = {r.condition: r for r in merge_rules(DEFAULT_RULES, {"quality_low": {"threshold": 35}})}
    assert merged["quality_low"].enabled and merged["quality_low"].threshold == 35
    kept_off = {r.condition: r for r in merge_rules(DEFAULT_RULES, {"quality_low": {"threshold": 35, "enabled": False}})}
    assert not kept_off["quality_low"].enabled
    assert {r.condition: r for r in merge_rules(DEFAULT_RULES, {"frozen": {"min_duration": 9}})}["frozen"].enabled
