"""The detector registry: a detector declared in one module brings its measure into the frame
record, its settings into ``detectors.settings`` and its rule into the default rules."""
from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
from pydantic import Field, ValidationError

from monitor.alerts import DEFAULT_RULES, AlertEngine, default_rules
from monitor.detectors import FRAME_KEYS, FrameDetectors, registry
from monitor.media import detect_picture


@pytest.fixture
def own_registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _register_red() -> None:
    """What a new detector module holds: its settings, its measure and its default rule."""

    class RedSettings(registry.DetectorSettingsBase):
        red_min_fraction: float = Field(0.5, gt=0, le=1)

    @registry.register_detector
    class RedDetector(registry.FrameDetector):
        name = "red"
        keys = ("red_fraction",)
        Settings = RedSettings

        @classmethod
        def rules(cls, s: Any) -> list[dict[str, Any]]:
            return [dict(condition="too_red", key="red_fraction", comparison="above",
                         threshold=s.red_min_fraction, min_duration=1.0, severity="info")]

        def measure(self, pic: registry.Picture) -> dict[str, float]:
            r, g, b = (pic.rgb[..., i].astype(np.int16) for i in range(3))
            return {"red_fraction": float(np.mean((r > 150) & (g < 80) & (b < 80)))}


def _frame(rgb: tuple[int, int, int]) -> av.VideoFrame:
    picture = np.zeros((96, 128, 3), np.uint8)
    picture[:] = rgb
    return av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")


def test_a_detector_from_one_module_gets_its_measure_settings_and_rule(own_registry):
    _register_red()
    settings_model = registry.settings_model()
    settings = settings_model(red_min_fraction=0.8, black_min_duration=3.0)
    with pytest.raises(ValidationError, match="red_min_fraction"):
        settings_model(red_min_fraction=2.0)

    rules = {r.condition: r for r in default_rules(settings)}
    assert rules["too_red"].threshold == 0.8 and rules["too_red"].key == "red_fraction"
    assert rules["black"].min_duration == 3.0  # the built-in rules are all still there
    assert set(rules) == {r.condition for r in DEFAULT_RULES} | {"too_red"}

    # the frame record: the step the stream worker and vqmon report share
    detectors = FrameDetectors(settings)
    engine = AlertEngine(rules=list(rules.values()))
    started = []
    for i in range(6):
        values = detect_picture(detectors, _frame((220, 30, 30)), 0.5 * i, 0.5 * i, 640, None)
        assert values["red_fraction"] == 1.0 and set(values) == set(FRAME_KEYS) | {"red_fraction"}
        started += [e.condition for e in engine.update("cam", values, 0.5 * i) if e.kind == "start"]
    assert started.count("too_red") == 1  # (a repeated picture is also frozen)
    values = detect_picture(detectors, _frame((30, 30, 220)), 3.0, 3.0, 640, None)
    assert values["red_fraction"] == 0.0


def test_a_measure_or_setting_is_declared_by_one_detector_only(own_registry):
    class Twin(registry.FrameDetector):
        name = "twin"
        keys = ("blockiness",)

    with pytest.raises(ValueError, match="blockiness.*already declared by detector 'blockiness'"):
        registry.register_detector(Twin)

    class Again(registry.FrameDetector):
        name = "black"
        keys = ("other",)

    with pytest.raises(ValueError, match="'black' is already registered"):
        registry.register_detector(Again)


def test_every_default_rule_comes_after_the_rules_it_yields_to():
    # the alert engine walks the rules in order: a rule is suppressed in the very sample its
    # suppressor starts only when that one came first
    seen: set[str] = set()
    for rule in default_rules():
        assert set(rule.suppressed_by) <= seen, rule.condition
        seen.add(rule.condition)
