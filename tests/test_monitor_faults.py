"""Faults: broken inputs, hung sources and a Redis outage must not stop the other streams."""
from __future__ import annotations

import socket
import threading

from conftest import finishes_within, redis_writer
from monitor.redis_server import EmbeddedRedis, free_port


def _value(m, name, **labels):
    return m.metrics.registry.get_sample_value(name, labels)


def test_broken_inputs_are_marked_down_while_others_are_scored(redis_server, monitor_factory, samples, tmp_path,
                                                               waiter):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((samples / "bigbuckbunny.mp4").read_bytes()[:300_000])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 2000)
    closed_port = free_port()
    m = monitor_factory({
        "defaults": {"sample_rate": 1.0, "reconnect": {"initial_delay": 0.3, "max_delay": 1.0}},
        "streams": [
            {"name": "good", "url": str(samples / "bikes.mp4"), "loop": True},
            {"name": "truncated", "url": str(truncated)},
            {"name": "garbage", "url": str(garbage), "loop": True},  # looping file: keeps retrying
            {"name": "missing", "url": str(tmp_path / "nope.mp4")},
            {"name": "unreachable", "url": f"rtsp://127.0.0.1:{closed_port}/x"},
        ],
        "redis": {"url": redis_server.url},
    })
    r = redis_server.client()
    bad = ("truncated", "garbage", "missing", "unreachable")
    waiter(lambda: all(m.streams[s].error for s in bad) and r.xlen("vqmon:good:records") >= 3, 40,
           message="errors on the broken streams and records of the good one")
    waiter(lambda: (_value(m, "vqmon_reconnects_total", stream="unreachable") or 0) >= 2, 20,
           message="reconnect attempts")
    snap = {row["stream"]: row for row in m.snapshot()}
    assert snap["good"]["state"] == "up" and snap["good"]["scored"] >= 3
    assert _value(m, "vqmon_stream_up", stream="good") == 1
    for s in bad:
        assert _value(m, "vqmon_stream_up", stream=s) == 0, s
        assert r.xlen(f"vqmon:{s}:records") == 0
    assert snap["truncated"]["state"] == "failed" and snap["missing"]["state"] == "failed"
    assert snap["garbage"]["state"] in ("error", "connecting")  # retried with backoff
    assert "Invalid data" in snap["truncated"]["error"] or "moov" in snap["truncated"]["error"]
    assert "Invalid data" in snap["garbage"]["error"]
    assert "No such file" in snap["missing"]["error"]
    assert "refused" in snap["unreachable"]["error"].lower()
    state = r.hgetall("vqmon:unreachable:state")
    assert state[b"up"] == b"0" and b"refused" in state[b"error"].lower()
    downs = {f[b"stream"] for _, f in r.xrange("vqmon:events") if f[b"condition"] == b"stream_down"}
    assert set(s.encode() for s in bad) <= downs
    assert b"good" not in downs


class _SilentServer:
    """Accepts TCP connections and never says anything (a hung camera)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_hung_source_times_out_and_worker_is_killed(redis_server, monitor_factory, samples, waiter):
    silent = _SilentServer()
    try:
        m = monitor_factory({
            "defaults": {"sample_rate": 1.0, "reconnect": {"initial_delay": 0.3, "max_delay": 1.0}},
            "streams": [
                {"name": "good", "url": str(samples / "bikes.mp4"), "loop": True},
                # socket timeouts: the open fails after ~1.5 s
                {"name": "silent", "url": f"rtsp://127.0.0.1:{silent.port}/x", "timeouts": {"open": 1.5, "read": 1.5}},
                # the process watchdog (hang < open timeout): the worker is killed and restarted
                {"name": "hung", "url": f"rtsp://127.0.0.1:{silent.port}/y",
                 "timeouts": {"open": 60, "read": 60, "hang": 2.0}},
            ],
            "redis": {"url": redis_server.url},
        })
        waiter(lambda: m.streams["silent"].error and m.streams["hung"].error
               and "killed" in (m.streams["hung"].error or ""), 30, message="timeouts and the watchdog")
        assert "timed out" in m.streams["silent"].error.lower() or "timeout" in m.streams["silent"].error.lower() \
            or "exit" in m.streams["silent"].error.lower()
        waiter(lambda: (_value(m, "vqmon_reconnects_total", stream="hung") or 0) >= 1, 20, message="respawn")
        assert _value(m, "vqmon_stream_up", stream="hung") == 0
        assert _value(m, "vqmon_stream_up", stream="silent") == 0
        waiter(lambda: m.streams["good"].scored >= 3, 20, message="the good stream keeps being scored")
        finishes_within(60, m.stop, what="stopping with a hung source")  # a generous bound: no hang
    finally:
        silent.close()


def test_redis_outage_is_survived_and_losses_counted(monitor_factory, samples, tmp_path, waiter):
    port = free_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    # persistence on, so what was written before the outage is still there to count afterwards
    args = ["--appendonly", "yes", "--appendfsync", "always"]
    server = EmbeddedRedis(port=port, data_dir=str(data), extra_args=args).start()
    try:
        m = monitor_factory({
            "defaults": {"sample_rate": 1.0},
            "streams": [{"name": "a", "url": str(samples / "bikes.mp4"), "loop": True},
                        {"name": "b", "url": str(samples / "bigbuckbunny.mp4"), "loop": True}],
            "redis": {"url": server.url, "buffer_size": 4, "socket_timeout": 0.5},
        })
        r = server.client()
        waiter(lambda: r.xlen("vqmon:a:records") >= 2 and r.xlen("vqmon:b:records") >= 2, 30,
               message="records before the outage")
        r.close()
        server.stop()  # SIGTERM: redis writes its AOF and exits
        scored_at_down = sum(m.streams[s].scored for s in ("a", "b"))
        # decoding and scoring go on; the bounded buffer overflows
        waiter(lambda: sum(m.streams[s].scored for s in ("a", "b")) >= scored_at_down + 10
               and _value(m, "vqmon_redis_records_lost_total") >= 5, 60,
               message="scoring on through the outage and records lost from the full buffer")
        assert redis_writer(m).buffered <= 4
        lost_during = _value(m, "vqmon_redis_records_lost_total")
        assert _value(m, "vqmon_redis_up") == 0
        server.start()  # same port, same data
        r = server.client()
        n_before = r.xlen("vqmon:a:records") + r.xlen("vqmon:b:records")
        waiter(lambda: r.xlen("vqmon:a:records") + r.xlen("vqmon:b:records") >= n_before + 4, 20,
               message="writes resumed after the restart")
        m.stop()
        scored = sum(_value(m, "vqmon_frames_scored_total", stream=s) for s in ("a", "b"))
        written = r.xlen("vqmon:a:records") + r.xlen("vqmon:b:records")
        lost = _value(m, "vqmon_redis_records_lost_total")
        assert lost >= lost_during
        assert scored == written + lost, (scored, written, lost)
        assert _value(m, "vqmon_redis_buffered_records") == 0
        assert redis_writer(m).stats.written == written
    finally:
        server.cleanup()
