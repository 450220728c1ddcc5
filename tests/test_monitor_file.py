"""A file stream end to end: records in a real Redis with the documented schema, metrics on /metrics."""
from __future__ import annotations

import json
import math
import time
import urllib.request

import numpy as np
import pytest

from conftest import wait_for
from monitor.config import config_from_dict
from monitor.redis_server import EmbeddedRedis
from monitor.sinks.redis_sink import decode_map
from monitor.sinks.redis_writer import RedisMetrics, RedisWriter
from monitor.smoothing import ScoreSmoother

REQUIRED_METRICS = [
    "vqmon_quality_score", "vqmon_quality_worst_region_score", "vqmon_stream_up",
    "vqmon_last_frame_timestamp_seconds", "vqmon_frames_decoded_total", "vqmon_frames_scored_total",
    "vqmon_frames_dropped_total", "vqmon_reconnects_total", "vqmon_inference_latency_seconds",
    "vqmon_batch_size", "vqmon_build_info", "vqmon_detector_value", "vqmon_alert_active",
    "vqmon_redis_records_lost_total", "vqmon_redis_buffered_records", "vqmon_quality_score_smoothed",
]
RECORD_FIELDS = {b"ts", b"pts", b"score", b"score_smoothed", b"worst", b"worst_cell", b"worst_box", b"map", b"map_shape",
                 b"frame_size", b"detectors", b"model", b"seq"}


def _metrics_text(monitor) -> str:
    host, port = monitor.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_file_stream_records_in_redis(redis_server, monitor_factory, samples, waiter):
    m = monitor_factory({
        "streams": [{"name": "bbb", "url": str(samples / "bigbuckbunny.mp4"), "sample_rate": 2.0}],
        "redis": {"url": redis_server.url, "maxlen": 1000},
    })
    r = redis_server.client()
    waiter(lambda: r.xlen("vqmon:bbb:records") >= 2, 30, message="first records")
    text = _metrics_text(m)
    for name in REQUIRED_METRICS:
        assert f"# TYPE {name} " in text, name
    assert 'vqmon_stream_up{stream="bbb"} 1.0' in text
    assert 'vqmon_build_info{backend="cpu",model="bifusion",version=' in text
    assert 'vqmon_detector_value{detector="black",stream="bbb"}' in text
    ttl = r.ttl("vqmon:bbb:state")
    assert 0 < ttl <= 5
    state = r.hgetall("vqmon:bbb:state")
    assert state[b"stream"] == b"bbb" and state[b"state"] == b"up" and float(state[b"score"]) >= 0

    rc = m.run(duration=30)  # the file (5.3 s, not looped) ends: run returns by itself
    assert rc == 0
    m.stop()
    entries = r.xrange("vqmon:bbb:records")
    scored = m.metrics.registry.get_sample_value("vqmon_frames_scored_total", {"stream": "bbb"})
    assert len(entries) == scored >= 6
    assert m.metrics.registry.get_sample_value("vqmon_redis_records_lost_total") == 0
    pts, smooth = [], ScoreSmoother(4.0)  # the default score_smoothing
    for entry_id, f in entries:
        assert RECORD_FIELDS <= set(f), set(f)
        ts = float(f[b"ts"])
        assert int(entry_id.split(b"-")[0]) == round(ts * 1000)  # entry id = decode time in ms
        assert abs(ts - time.time()) < 120
        score = float(f[b"score"])
        assert 0.0 <= score <= 100.0
        # the smoothed score is the EMA of the raw scores over decode time
        assert float(f[b"score_smoothed"]) == pytest.approx(smooth.update(ts, score), abs=0.1)
        rows, cols = map(int, f[b"map_shape"].split(b","))
        grid = decode_map(f[b"map"], f[b"map_shape"])
        assert grid.shape == (rows, cols) and rows >= 2 and cols >= 2
        assert np.all((grid >= 0) & (grid <= 100))
        assert float(f[b"worst"]) == pytest.approx(float(grid.min()), abs=0.1)
        r0, c0 = map(int, f[b"worst_cell"].split(b","))
        assert grid[r0, c0] == pytest.approx(grid.min(), abs=0.1)
        assert f[b"frame_size"] == b"1280,720"
        x0, y0, x1, y1 = map(int, f[b"worst_box"].split(b","))
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
        det = json.loads(f[b"detectors"])
        assert {"black", "freeze_db", "blockiness", "blur"} <= set(det)
        assert f[b"model"] == b"bifusion"
        pts.append(float(f[b"pts"]))
    assert pts == sorted(pts) and pts[-1] - pts[0] >= 4.0  # 2 samples/s over the 5.3 s clip
    # sampling on the clip's own clock (25 fps from 0): each sample is the first frame at or after
    # a point of the 0.5 s grid, so at most one frame period (0.04 s) after it; a sample the scorer
    # could not take in time is dropped and counted, never moved: the 11 grid points of 0-5.0 s
    # are each either a record or a drop
    after_grid = [p - 0.5 * math.floor(p / 0.5 + 1e-6) for p in pts]
    assert all(-1e-3 <= d < 0.04 + 1e-3 for d in after_grid), after_grid
    slots = [math.floor(p / 0.5 + 1e-6) for p in pts]
    assert len(set(slots)) == len(slots) and slots[-1] <= 10, slots
    dropped = sum(s.value for fam in m.metrics.registry.collect() if fam.name == "vqmon_frames_dropped"
                  for s in fam.samples if s.name.endswith("_total") and s.labels.get("stream") == "bbb")
    assert len(pts) + dropped == 11, (pts, dropped)
    assert r.smembers("vqmon:streams") == {b"bbb"}
    events = [f for _, f in r.xrange("vqmon:events")]
    assert any(e[b"condition"] == b"stream_ended" and e[b"stream"] == b"bbb" for e in events)
    assert r.hget("vqmon:bbb:state", "state") == b"stopped"


def test_unix_socket_with_auth_and_embedded_default(monitor_factory, samples, waiter, monkeypatch):
    """The Redis password comes from a ``${VAR:-default}`` embedded in the middle of the value;
    the variable is unset, so only the default makes the password the server asks for."""
    raw_pw = "redis-${VQMON_TEST_REDIS_PW:-pw}-123"
    monkeypatch.delenv("VQMON_TEST_REDIS_PW", raising=False)
    other = config_from_dict({"streams": [{"name": "x", "url": "/x.mp4"}], "redis": {"password": raw_pw}},
                             env={"VQMON_TEST_REDIS_PW": "other"})
    assert other.redis.password == "redis-other-123"  # the variable, when set, wins over the default
    server = EmbeddedRedis(unix_socket=True, password="redis-pw-123").start()
    try:
        m = monitor_factory({
            "streams": [{"name": "bikes", "url": str(samples / "bikes.mp4"), "sample_rate": 1.0}],
            "redis": {"url": server.url, "password": raw_pw},
        })
        assert m.config.redis.password == "redis-pw-123"
        r = server.client()
        waiter(lambda: r.xlen("vqmon:bikes:records") >= 2, 30, message="records over a unix socket")
        m.stop()
        dump = b"".join(v for _, f in r.xrange("vqmon:bikes:records") for v in f.values())
        dump += b"".join(r.hgetall("vqmon:bikes:state").values())
        assert b"redis-pw-123" not in dump
    finally:
        server.cleanup()


def test_embedded_redis_when_none_configured(monitor_factory, samples, waiter):
    m = monitor_factory({"streams": [{"name": "bikes", "url": str(samples / "bikes.mp4"), "sample_rate": 1.0}]})
    embedded = next(s for s in m.sinks if s.name == "redis").embedded
    assert embedded is not None
    r = embedded.client()
    waiter(lambda: r.xlen("vqmon:bikes:records") >= 1, 30, message="records in the embedded redis")
    proc = embedded.proc
    m.stop()
    assert proc.poll() is not None  # the private server is gone with the monitor


def test_records_stream_is_trimmed_near_maxlen(redis_server):
    """``XADD MAXLEN ~ maxlen``: Redis trims whole stream nodes (``stream-node-max-entries``,
    100 by default), so a stream holds between maxlen and maxlen + 100 entries, the newest."""
    maxlen, n = 50, 600
    sink = RedisWriter(redis_server.url, maxlen=maxlen, events_maxlen=20, metrics=RedisMetrics())
    sink.start()
    try:
        for i in range(n):
            sink.put_record("cam", {"seq": str(i)}, ts=1_000_000.0 + i * 0.5)
        for i in range(300):
            sink.put_event({"stream": "cam", "condition": "test", "seq": str(i)})
        r = redis_server.client()
        wait_for(lambda: sink.stats.written == n and sink.stats.events_written == 300, 30,
                 message="every record and event written")
    finally:
        sink.stop()
    node = int(r.config_get("stream-node-max-entries")["stream-node-max-entries"])
    kept = r.xrange("vqmon:cam:records")
    assert maxlen <= len(kept) <= maxlen + node, len(kept)
    assert [int(f[b"seq"]) for _, f in kept] == list(range(n - len(kept), n))  # the newest, in order
    assert 20 <= r.xlen("vqmon:events") <= 20 + node
