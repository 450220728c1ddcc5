"""A full Redis (maxmemory reached, noeviction) rejects every write while the connection works
(issue 20, F4): rejected writes are counted by kind, a "write errors" state shows it, and the log
gets the first rejection and then a summary every ``error_log_interval`` seconds, not a line per
write. Against a real redis-server."""
from __future__ import annotations

import logging
import time

import pytest

from conftest import wait_for
from monitor.redis_server import EmbeddedRedis, RedisServerError
from monitor.sinks.redis_writer import RedisMetrics, RedisWriter

INTERVAL = 1.0  # summary period in this test (30 s in service)


@pytest.fixture
def full_redis():
    try:
        server = EmbeddedRedis(extra_args=["--maxmemory-policy", "noeviction"]).start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used // 2)  # "tiny": below what the server itself uses, so full
    with pytest.raises(Exception, match="maxmemory"):
        client.set("probe", "x")
    yield server, client
    client.close()
    server.cleanup()


def _rejected(m: RedisMetrics, kind: str) -> float:
    return m.registry.get_sample_value("vqmon_redis_writes_rejected_total", {"kind": kind})


def test_rejected_writes_are_counted_shown_and_logged_at_a_bounded_rate(full_redis, caplog):
    server, client = full_redis
    caplog.set_level(logging.INFO, logger="monitor.sinks")
    m = RedisMetrics()
    sink = RedisWriter(server.url, metrics=m, error_log_interval=INTERVAL)
    sink.register_streams(["cam"])
    sink.start()
    try:
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 3.5 * INTERVAL:  # a producer at ~100 writes/s of each kind
            sink.put_record("cam", {"score": "50"}, time.time())
            sink.put_event({"stream": "cam", "condition": "black", "kind": "start"})
            sink.set_state("cam", {"state": "up"}, ttl=5)
            sent += 1
            time.sleep(0.01)
        wait_for(lambda: _rejected(m, "record") == sent, 10, message="every record to be tried")
        assert _rejected(m, "event") == sent
        # state writes merge while a round is in flight; +1: the set of stream names (SADD)
        assert 1 <= _rejected(m, "state") <= sent + 1
        assert m.registry.get_sample_value("vqmon_redis_up") == 1  # the connection works...
        assert m.registry.get_sample_value("vqmon_redis_write_errors") == 1  # ...the writes do not
        assert sink.connected and "OutOfMemoryError" in sink.write_error
        assert m.registry.get_sample_value("vqmon_redis_records_lost_total") == sent
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        # the first rejection, then a summary per interval: ~4 lines for ~3 * sent rejected writes
        assert 2 <= len(errors) <= 6, errors
        assert "OutOfMemoryError: command not allowed when used memory > 'maxmemory'" in errors[0], errors
        assert "more write(s) rejected" in errors[-1], errors

        client.config_set("maxmemory", 0)  # room again
        sink.put_record("cam", {"score": "51"}, time.time())
        wait_for(lambda: m.registry.get_sample_value("vqmon_redis_write_errors") == 0, 10,
                 message="the write-errors state to clear")
        assert sink.write_error is None
        assert any("writes accepted again" in r.getMessage() for r in caplog.records)
        assert client.xlen("vqmon:cam:records") == 1
    finally:
        sink.stop(flush_timeout=1.0)
