"""`vqmon run` as a real process: clean SIGTERM exit, and URL passwords nowhere to be seen."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, vqmon_command, wait_for
from monitor.redis_server import EmbeddedRedis, free_port

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


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One `vqmon run -c FILE` process, stopped with SIGTERM once records flow."""
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
redis: {{url: "{redis.url}"}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
""")
    env = dict(os.environ, CAM_PASSWORD=PASSWORD, PYTHONPATH=str(ROOT))
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([*vqmon_command(), "run", "-c", str(cfg), "--no-console"],
                                cwd=ROOT, env=env, stdout=fo, stderr=fe)
        r = redis.client()
        result: dict = {"redis": redis, "client": r}
        try:
            wait_for(lambda: proc.poll() is not None or (
                r.xlen("vqmon:clip:records") >= 3 and any(
                    f[b"stream"] == b"cam" and f[b"condition"] == b"stream_down"
                    for _, f in r.xrange("vqmon:events"))), 120, message="records and the cam error")
            assert proc.poll() is None, err.read_text()[-3000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
                result["metrics"] = resp.read().decode()
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                result["rc"] = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                result["rc"] = "timeout"
            result["stop_seconds"] = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result["stdout"], result["stderr"] = out.read_text(errors="replace"), err.read_text(errors="replace")
    yield result
    redis.cleanup()


def test_sigterm_exits_zero_within_5_seconds(cli_run):
    assert cli_run["rc"] == 0, cli_run["stderr"][-3000:]
    assert cli_run["stop_seconds"] < 5.0
    r = cli_run["client"]
    # buffered records were flushed and the state hash says the monitor stopped
    assert r.hget("vqmon:clip:state", "state") == b"stopped"
    scored = [line for line in cli_run["metrics"].splitlines() if line.startswith('vqmon_frames_scored_total{stream="clip"}')]
    assert scored and float(scored[0].split()[-1]) >= 3


def test_password_never_in_logs_metrics_or_redis(cli_run):
    logs = cli_run["stdout"] + cli_run["stderr"]
    assert "refused" in logs.lower(), logs[-2000:]           # the cam errors were logged ...
    assert "viewer:***@127.0.0.1" in logs or "cam" in logs   # ... with the URL redacted
    dump = _redis_dump(cli_run["client"])
    assert b"viewer:***@" in dump                             # state hash keeps the redacted URL
    for where, text in (("logs", logs.encode()), ("metrics", cli_run["metrics"].encode()), ("redis", dump)):
        assert PASSWORD.encode() not in where.encode() + text, f"password leaked into {where}"
    assert 'vqmon_stream_up{stream="cam"} 0.0' in cli_run["metrics"]
    assert 'vqmon_stream_up{stream="clip"} 1.0' in cli_run["metrics"]
