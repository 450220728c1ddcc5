"""``stall`` needs a stream that was delivering (issue 20, F5).

Under load a healthy stream may take longer than the stall threshold (3 s) to decode its first
frame, and a stream that never opens is ``stream_down``'s business: neither is a stall. A
stream that delivered frames and then stopped still is one. These drive the monitor's
housekeeping (what ``Monitor.run`` calls twice a second) without workers or an engine.
"""
from __future__ import annotations

import math
import time

import pytest

from monitor.config import config_from_dict
from monitor.service import Monitor


@pytest.fixture
def monitor():
    cfg = config_from_dict({"streams": [{"name": "cam", "url": "rtsp://127.0.0.1:1/x"}],
                            "redis": {"enabled": False}, "metrics": {"enabled": False}, "console": False})
    m = Monitor(cfg, engines={}, announce=lambda text: None)
    m.events = []
    m.publisher.event = m.events.append  # what would go to the sinks' events
    return m


def _report(m: Monitor, state: str, up: bool, detail: dict) -> None:
    """What the stream's supervisor thread does: its state written, then the tracker told."""
    m.streams["cam"].state = state
    m.tracker.on_state("cam", state, up, detail)


def _active(m: Monitor) -> set[str]:
    return {a["condition"] for a in m.active_alerts()}


def _stall_metric(m: Monitor) -> float:
    return m.metrics.registry.get_sample_value("vqmon_detector_value", {"stream": "cam", "detector": "stall_seconds"})


def test_no_stall_before_the_first_frame(monitor):
    rt = monitor.streams["cam"]
    rt.started = time.time() - 20  # connecting for 20 s (a slow start under load)
    _report(monitor, "connecting", False, {})
    monitor.tracker.housekeeping()
    assert "stall" not in _active(monitor)
    assert math.isnan(_stall_metric(monitor))


def test_a_stream_that_never_opens_is_down_not_stalled(monitor):
    monitor.streams["cam"].started = time.time() - 60
    _report(monitor, "error", False, {"error": "cannot open: ConnectionRefusedError", "retry_in": 1.0})
    monitor.tracker.housekeeping()
    assert [(e["condition"], e["kind"]) for e in monitor.events] == [("stream_down", "start")]
    assert "stall" not in _active(monitor)


def test_a_stream_that_delivered_and_stopped_is_stalled(monitor):
    _report(monitor, "up", True, {})
    monitor.tracker.on_decoded("cam", 25, time.time() - 10)  # its last frame 10 s ago
    monitor.tracker.housekeeping()
    assert "stall" in _active(monitor)
    assert _stall_metric(monitor) == pytest.approx(10, abs=1)
