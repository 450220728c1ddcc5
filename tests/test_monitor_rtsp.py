"""RTSP (TCP) from a real GstRtspServer: records flow, the server dies and comes back, the worker reconnects."""
from __future__ import annotations

import logging
import time
import urllib.request

PASSWORD = "rtsp-s3cret"


def _value(m, name, **labels):
    return m.metrics.registry.get_sample_value(name, labels)


def test_rtsp_reconnects_after_server_restart(redis_server, rtsp_server, monitor_factory, waiter, caplog):
    caplog.set_level(logging.DEBUG, logger="monitor")
    server = rtsp_server()
    m = monitor_factory({
        "defaults": {"sample_rate": 2.0, "reconnect": {"initial_delay": 0.5, "max_delay": 2.0},
                     "timeouts": {"open": 5, "read": 3, "stale": 2}},
        # the server does not ask for credentials: FFmpeg never sends them, but they are in the URL
        "streams": [{"name": "cam", "url": server.url(f"viewer:{PASSWORD}")}],
        "redis": {"url": redis_server.url},
    })
    r = redis_server.client()
    waiter(lambda: r.xlen("vqmon:cam:records") >= 3, 30, message="records from the RTSP stream")
    assert _value(m, "vqmon_stream_up", stream="cam") == 1
    first = r.xrange("vqmon:cam:records")[0][1]
    assert first[b"frame_size"] == b"640,272"

    server.kill()  # mid-stream, no goodbye
    waiter(lambda: _value(m, "vqmon_stream_up", stream="cam") == 0, 15, message="stream marked down")
    n_down = r.xlen("vqmon:cam:records")
    time.sleep(2.0)
    t_restart = time.time()
    server.start()  # same port
    waiter(lambda: _value(m, "vqmon_stream_up", stream="cam") == 1, 30, message="stream up again")
    waiter(lambda: r.xlen("vqmon:cam:records") >= n_down + 3, 30, message="records resumed")
    last = r.xrevrange("vqmon:cam:records", count=1)[0][1]
    assert float(last[b"ts"]) > t_restart
    assert _value(m, "vqmon_reconnects_total", stream="cam") >= 1

    events = [f for _, f in r.xrange("vqmon:events") if f[b"stream"] == b"cam"]
    kinds = [(e[b"condition"], e[b"kind"]) for e in events]
    assert (b"stream_down", b"start") in kinds and (b"stream_down", b"resolved") in kinds

    # the URL's password: not in logs, metrics or Redis
    host, port = m.metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        metrics = resp.read()
    m.stop()
    dump = b"".join(v for _, f in r.xrange("vqmon:cam:records") for v in f.values() if isinstance(v, bytes))
    dump += b"".join(v for _, f in r.xrange("vqmon:events") for v in f.values())
    dump += b"".join(r.hgetall("vqmon:cam:state").values())
    assert b"viewer:***@127.0.0.1" in dump
    assert PASSWORD.encode() not in dump
    assert PASSWORD.encode() not in metrics
    assert PASSWORD not in caplog.text
    assert "cam" in caplog.text
