"""`vqmon run` as a real process: a clean SIGTERM exit that flushes the records Redis could not
take yet, URL passwords nowhere to be seen, and `vqmon run --demo` from start to SIGINT."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request

import pytest

from conftest import ROOT, vqmon_command, wait_for
from monitor.redis_server import EmbeddedRedis, free_port
from monitor.config import stream_name_for
from monitor.run_command import demo_sources

PASSWORD = "s3cret-Pa55"


def _redis_dump(client) -> bytes:
    out = []
    for key in client.scan_iter("*"):
        out.append(key)
        kind = client.type(key)
        if kind == b"stream":
            for _id, fields in client.xrange(key):
                out += list(fields.keys()) + list(fields.values())
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"string":
            out.append(client.get(key))
    return b"\n".join(out)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _buffered(port: int) -> float:
    m = re.search(r"^vqmon_redis_buffered_records (\S+)$", _scrape(port), re.M)
    return float(m.group(1)) if m else 0.0


def _stopping(proc: subprocess.Popen, port: int) -> bool:
    if proc.poll() is not None:
        return True
    try:
        return 'vqmon_stream_up{stream="clip"} 0.0' in _scrape(port)
    except OSError:  # the listener is gone: past the flush
        return True


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One `vqmon run -c FILE` process. Once records flow, Redis stops answering (SIGSTOP) until
    records wait in the monitor's buffer; then SIGTERM, and Redis answers again (SIGCONT) only
    once the monitor is stopping: what was buffered must still reach Redis before the exit."""
    tmp = tmp_path_factory.mktemp("cli")
    redis = EmbeddedRedis().start()
    metrics_port = free_port()
    closed = free_port()
    cfg = tmp / "vqmon.yaml"
    cfg.write_text(f"""
defaults:
  sample_rate: 2
  reconnect: {{initial_delay: 0.3, max_delay: 1}}
streams:
  - name: clip
    url: {ROOT / 'monitor' / 'samples' / 'bikes.mp4'}
    loop: true
  - name: cam
    url: rtsp://viewer:${{CAM_PASSWORD}}@127.0.0.1:{closed}/live?token=${{CAM_PASSWORD}}
engine: {{backend: cpu}}
redis: {{url: "{redis.url}", socket_timeout: 1, flush_timeout: 20}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
""")
    env = dict(os.environ, CAM_PASSWORD=PASSWORD, PYTHONPATH=str(ROOT))
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([*vqmon_command(), "run", "-c", str(cfg), "--no-console"],
                                cwd=ROOT, env=env, stdout=fo, stderr=fe)
        r = redis.client()
        result: dict = {"redis": redis, "client": r, "closed_port": closed}
        try:
            wait_for(lambda: proc.poll() is not None or (
                r.xlen("vqmon:clip:records") >= 3 and any(
                    f[b"stream"] == b"cam" and f[b"condition"] == b"stream_down"
                    for _, f in r.xrange("vqmon:events"))), 120, message="records and the cam error")
            assert proc.poll() is None, err.read_text()[-3000:]
            result["metrics"] = _scrape(metrics_port)
            result["records_before"] = r.xlen("vqmon:clip:records")
            os.kill(redis.proc.pid, signal.SIGSTOP)

            def records_waiting() -> bool:
                assert proc.poll() is None, err.read_text()[-3000:]
                return _buffered(metrics_port) >= 2

            try:
                wait_for(records_waiting, 60, message="records waiting in the monitor's buffer")
                result["buffered"] = _buffered(metrics_port)
                proc.send_signal(signal.SIGTERM)
                # Monitor.stop marks every stream down just before it flushes the sink (and serves
                # /metrics until after): from then on only the exit flush can write the buffer
                wait_for(lambda: _stopping(proc, metrics_port), 60, message="the monitor at its exit flush")
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            try:
                result["rc"] = proc.wait(60)  # a generous bound, not a speed target
            except subprocess.TimeoutExpired:
                proc.kill()
                result["rc"] = "timeout"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result["stdout"], result["stderr"] = out.read_text(errors="replace"), err.read_text(errors="replace")
    yield result
    redis.cleanup()


def test_sigterm_exits_zero_and_flushes_the_buffered_records(cli_run):
    assert cli_run["rc"] == 0, cli_run["stderr"][-3000:]
    r = cli_run["client"]
    state = r.hgetall("vqmon:clip:state")
    assert state[b"state"] == b"stopped"
    written = r.xlen("vqmon:clip:records")
    # every frame scored until the exit has its record in Redis, the buffered ones included
    assert written == int(state[b"scored"]), (written, state)
    assert written - cli_run["records_before"] >= cli_run["buffered"] >= 2
    assert "could not be written" not in cli_run["stderr"]
    scored = [line for line in cli_run["metrics"].splitlines() if line.startswith('vqmon_frames_scored_total{stream="clip"}')]
    assert scored and float(scored[0].split()[-1]) >= 3


def test_password_never_in_logs_metrics_or_redis(cli_run):
    logs = cli_run["stdout"] + cli_run["stderr"]
    assert "refused" in logs.lower(), logs[-2000:]           # the cam errors were logged ...
    assert f"cam: rtsp://viewer:***@127.0.0.1:{cli_run['closed_port']}/live?token=***" in logs  # ... redacted
    dump = _redis_dump(cli_run["client"])
    assert b"viewer:***@" in dump                             # state hash keeps the redacted URL
    for where, text in (("logs", logs.encode()), ("metrics", cli_run["metrics"].encode()), ("redis", dump)):
        assert PASSWORD.encode() not in where.encode() + text, f"password leaked into {where}"
    assert 'vqmon_stream_up{stream="cam"} 0.0' in cli_run["metrics"]
    assert 'vqmon_stream_up{stream="clip"} 1.0' in cli_run["metrics"]


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read()


def test_demo_scores_serves_the_page_and_stops_on_sigint(tmp_path):
    """`vqmon run --demo`: the shipped clips, a private redis-server, the live view; SIGINT ends it with 0."""
    port = free_port()
    names = sorted(stream_name_for(str(p), set()) for p in demo_sources())
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([*vqmon_command(), "run", "--demo", "--no-console", "--metrics", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=fo, stderr=fe)
        try:
            def all_scored():
                assert proc.poll() is None, err.read_text()[-3000:]
                try:
                    data = json.loads(_get(port, "/api/streams")[2])
                except OSError:
                    return None
                return data if data["streams"] and all(s["scored"] >= 1 for s in data["streams"]) else None

            data = wait_for(all_scored, 180, interval=0.5, message="every demo clip scored")
            assert sorted(s["name"] for s in data["streams"]) == names and len(names) >= 2
            assert all(0 <= s["score"] <= 100 and s["state"] == "up" for s in data["streams"])
            assert data["instance"]["sinks"]["redis"]["connected"] is True  # the private redis-server
            status, ctype, page = _get(port, "/")
            assert status == 200 and ctype.startswith("text/html") and b'src="static/app.js"' in page
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = err.read_text(errors="replace")
    assert rc == 0, logs[-3000:]
    assert "SIGINT received: stopping" in logs
