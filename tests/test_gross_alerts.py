"""Alerts from the first second (issue 16): the absolute gross-damage rules (monitor/gross_rules.py)
fire on damage with no baseline, stay silent on the values of clean pictures of every kind and
resolve; the relative rules warm up in 5 s, ask more of a young or restless baseline and, for
quality_drop, a confirming detector. Detector values are fed to the default rules directly."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from monitor import gross_rules as gr
from monitor.alerts import AlertEngine, AlertRule, Confirm, default_rules

DT = 0.5  # 2 samples/s

# detector values of a clean picture (ordinary daylight footage)
CLEAN = {"black": 0.0, "frozen": 0.0, "noise_native": 1.0, "edge_width": 2.0, "white_level": 0.95,
         "luma_mean": 0.45, "clipped_highlights": 0.01, "blur": 0.3, "blockiness": 1.1,
         "mb_edge_breaks": 0.0}
# the worst clean values of the calibration set (docs/degradations.md), one kind at a time
CLEAN_EXTREMES = {
    "film grain / texture": {"noise_native": gr.NOISE_CLEAR},
    "soft clip (cockatoo)": {"edge_width": gr.EDGE_CLEAR},
    "night town": {"white_level": 0.45, "luma_mean": 0.05},
    "snow": {"white_level": 0.99, "luma_mean": 0.85, "clipped_highlights": 0.05},
    "title card": {"edge_width": 1.2, "noise_native": 0.0, "white_level": 0.98, "luma_mean": 0.2},
}


def feed(eng: AlertEngine, segments, stream: str = "s", t0: float = 0.0):
    """segments: [(seconds, values)]; returns the events, times on a 2/s clock."""
    events, t = [], t0
    for seconds, values in segments:
        for _ in range(round(seconds / DT)):
            events += eng.update(stream, values, t)
            t += DT
    return events


def starts(events):
    return [(e.condition, e.severity, e.at) for e in events if e.kind == "start"]


@pytest.mark.parametrize("condition,damage", [
    ("heavy_noise", {"noise_native": 12.0}),          # sigma 20 per channel after the encoder
    ("heavy_blur", {"edge_width": 5.0}),              # Gaussian sigma 4 px at 640 wide
    ("underexposed", {"white_level": 0.18, "luma_mean": 0.08}),  # exposure at 20 %
])
def test_gross_damage_fires_from_the_first_second_and_resolves(condition, damage):
    eng = AlertEngine()
    ev = feed(eng, [(6.0, {**CLEAN, **damage}), (10.0, CLEAN)])
    st = starts(ev)
    assert [(c, s) for c, s, _ in st] == [(condition, "warning")], st
    assert st[0][2] <= 2.5  # a stream that starts damaged: alert within 2.5 s of its first sample
    res = [e for e in ev if e.kind == "resolved"]
    assert [e.condition for e in res] == [condition]
    assert res[0].ended_at == pytest.approx(6.0, abs=1.0)
    # the same after an 8 s clean lead-in
    eng = AlertEngine()
    st = starts(feed(eng, [(8.0, CLEAN), (6.0, {**CLEAN, **damage}), (6.0, CLEAN)]))
    assert [(c, s) for c, s, _ in st] == [(condition, "warning")], st
    assert st[0][2] - 8.0 <= 2.5


@pytest.mark.parametrize("name", list(CLEAN_EXTREMES))
def test_clean_extremes_raise_no_warning(name):
    eng = AlertEngine()
    ev = feed(eng, [(60.0, {**CLEAN, **CLEAN_EXTREMES[name]})])
    assert [s for s in starts(ev) if s[1] != "info"] == []


def test_black_is_black_not_also_underexposed():
    eng = AlertEngine()
    black = {**CLEAN, "black": 1.0, "white_level": 0.02, "luma_mean": 0.0, "edge_width": float("nan"),
             "noise_native": 0.0}
    st = starts(feed(eng, [(8.0, CLEAN), (6.0, black), (4.0, CLEAN)]))
    assert [(c, s) for c, s, _ in st] == [("black", "critical")], st


def test_level_collapse_is_a_warning_and_a_cut_to_night_is_not():
    dark = {**CLEAN, "luma_mean": 0.10, "white_level": 0.30}   # exposure at a third: white falls too
    night = {**CLEAN, "luma_mean": 0.08, "white_level": 0.85}  # a night scene keeps its lights
    eng = AlertEngine()
    ev = feed(eng, [(8.0, CLEAN), (6.0, dark), (8.0, CLEAN)])
    st = starts(ev)
    assert [(c, s) for c, s, _ in st] == [("level_collapse", "warning")], st
    assert st[0][2] - 8.0 <= 2.5
    assert [e.condition for e in ev if e.kind == "resolved"] == ["level_collapse"]
    eng = AlertEngine()
    assert [s for s in starts(feed(eng, [(8.0, CLEAN), (20.0, night)])) if s[1] != "info"] == []


def test_severities_gross_noise_warns_mild_noise_is_info():
    rules = {r.condition: r for r in default_rules()}
    assert rules["heavy_noise"].severity == "warning"
    assert rules["level_collapse"].severity == "warning"
    assert rules["underexposed"].severity == "warning"
    assert rules["noisy"].severity == "info" and rules["noisy"].key == "noise_native"
    eng = AlertEngine()
    mild = {**CLEAN, "noise_native": 4.0}  # 3 levels above the stream's own, under heavy_noise
    st = starts(feed(eng, [(30.0, CLEAN), (8.0, mild)]))
    assert [(c, s) for c, s, _ in st] == [("noisy", "info")], st


# -- fast warm-up of the relative rules ----------------------------------------------------------------

def _scores(eng, segments, confirm_values=None):
    ev, t = [], 0.0
    for seconds, score, det in segments:
        for _ in range(round(seconds / DT)):
            ev += eng.update("s", det, t)
            ev += eng.update("s", {"score": score}, t)
            t += DT
    return [e for e in ev if e.kind == "start" and e.condition == "quality_drop"]


def test_quality_drop_is_usable_after_5_s_and_stricter_while_young():
    blurred = {**CLEAN, "blur": 0.6, "edge_width": 4.0}
    # 6 s of history: 25 points is not enough (about 39 needed then), 45 is
    assert _scores(AlertEngine(), [(6.0, 70.0, CLEAN), (6.0, 45.0, blurred)]) == []
    ev = _scores(AlertEngine(), [(6.0, 70.0, CLEAN), (6.0, 25.0, blurred)])
    # 2 s mean, held 2 s: a persistent drop, not the fastest alarm (gross damage has its own)
    assert len(ev) == 1 and ev[0].started_at == 6.0 and ev[0].at - 6.0 <= 4.0
    # from 30 s on, the nominal 20 points
    ev = _scores(AlertEngine(), [(40.0, 70.0, CLEAN), (6.0, 45.0, blurred)])
    assert len(ev) == 1 and ev[0].threshold == pytest.approx(50.0, abs=1.0)


def test_quality_drop_needs_a_confirming_detector():
    # a pan across a photo: the score falls 30 points with the content, the detectors stay put
    assert _scores(AlertEngine(), [(40.0, 70.0, CLEAN), (10.0, 40.0, CLEAN)]) == []
    # the same fall with the blur rising: a drop
    assert len(_scores(AlertEngine(), [(40.0, 70.0, CLEAN), (10.0, 40.0, {**CLEAN, "blur": 0.45})])) == 1
    # detectors off (no values): no confirmation is asked for
    assert len(_scores(AlertEngine(), [(40.0, 70.0, {}), (10.0, 40.0, {})])) == 1


def test_quality_drop_asks_more_of_a_restless_score():
    rng = np.random.default_rng(0)
    eng = AlertEngine()
    ev = []
    t = 0.0
    blurred = {**CLEAN, "blur": 0.6}
    for i in range(120):  # 60 s of a score that swings +-15 with the content
        ev += eng.update("s", CLEAN, t) + eng.update("s", {"score": 60 + 15 * np.sin(i / 6) + rng.normal(0, 2)}, t)
        t += DT
    for _ in range(12):  # 25 points under the median, confirmed: within the swing, no alert
        ev += eng.update("s", blurred, t) + eng.update("s", {"score": 35.0}, t)
        t += DT
    assert [e for e in ev if e.kind == "start" and e.condition == "quality_drop"] == []


def test_warmup_scale_and_mad_in_thresholds():
    r = AlertRule(condition="d", key="x", comparison="below", drop_points=20, baseline_min_seconds=5,
                  warmup_seconds=30, warmup_factor=2.0, mad_factor=2.0)
    assert r.thresholds(70.0, 2.0, 0.0)[0] == pytest.approx(30.0)
    assert r.thresholds(70.0, 1.0, 0.0)[0] == pytest.approx(50.0)
    assert r.thresholds(70.0, 1.0, 15.0)[0] == pytest.approx(40.0)  # 2 robust sigmas
    from monitor.alert_state import warmup_scale
    assert warmup_scale(r, 5.0) == pytest.approx(2.0)
    assert warmup_scale(r, 17.5) == pytest.approx(1.5)
    assert warmup_scale(r, 60.0) == pytest.approx(1.0)


def test_confirm_validation():
    with pytest.raises(ValidationError):
        Confirm(key="blur", comparison="above")
    with pytest.raises(ValidationError):
        AlertRule(condition="a", key="x", comparison="above", threshold=1.0,
                  confirm=[Confirm(key="y", comparison="above", drop_points=1.0)])


def test_heavy_blur_ignores_odd_soft_frames():
    """cockatoo (a clean 720p clip): its sharpest edges are 3.0-3.6 px wide, and a sampled frame
    with a wing beat reads 7.4; two of them a second apart move the 1.5 s median for one
    sample only (a mean would stay over the threshold for 2 s)."""
    eng = AlertEngine()
    soft, beat = {**CLEAN, "edge_width": 3.5}, {**CLEAN, "edge_width": 7.4}
    ev = feed(eng, [(4.0, soft), (0.5, beat), (0.5, soft), (0.5, beat), (4.0, soft)] * 3)
    assert starts(ev) == []
