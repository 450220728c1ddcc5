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
    m._make_alerts()
    m.events = []
    m._event = m.events.append  # what would go to Redis's events stream
    return m


def _active(m: Monitor) -> set[str]:
    return {a["condition"] for a in m.active_alerts()}


def _stall_metric(m: Monitor) -> float:
    return m.metrics.registry.get_sample_value("vqmon_detector_value", {"stream": "cam", "detector": "stall_seconds"})


def test_no_stall_before_the_first_frame(monitor):
    rt = monitor.streams["cam"]
    rt.started = time.time() - 20  # connecting for 20 s (a slow start under load)
    monitor.on_state("cam", "connecting", False, {})
    monitor._housekeeping()
    assert "stall" not in _active(monitor)
    assert math.isnan(_stall_metric(monitor))


def test_a_stream_that_never_opens_is_down_not_stalled(monitor):
    monitor.streams["cam"].started = time.time() - 60
    monitor.on_state("cam", "error", False, {"error": "cannot open: ConnectionRefusedError", "retry_in": 1.0})
    monitor._housekeeping()
    assert [(e["condition"], e["kind"]) for e in monitor.events] == [("stream_down", "start")]
    assert "stall" not in _active(monitor)


def test_a_stream_that_delivered_and_stopped_is_stalled(monitor):
    monitor.on_state("cam", "up", True, {})
    monitor.on_decoded("cam", 25, time.time() - 10)  # its last frame 10 s ago
    monitor._housekeeping()
    assert "stall" in _active(monitor)
    assert _stall_metric(monitor) == pytest.approx(10, abs=1)
