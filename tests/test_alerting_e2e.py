"""Degradation -> alert notification, end to end, with real servers on loopback.

A clip made from the shipped sample (monitor/samples/bikes.mp4) goes clean -> black -> clean
(4 s, 16 s, 16 s). ``vqmon run`` (a real process, paced at real time, CPU backend) monitors it
at 2 samples/s and serves /metrics; a real Prometheus scrapes it every second and evaluates
OUR rules file (deploy/prometheus/rules/vqmon.rules.yml, loaded unchanged: same expressions,
same ``for: 10s``; the black part is long enough for it), and sends to a real Alertmanager
whose configuration is deploy/alertmanager/alertmanager.yml with shorter waits
(group_wait/group_interval 1 s, resolve_timeout 1m) and the webhook URLs pointing at a
receiver this test runs (http.server on 127.0.0.1, collecting the POSTed JSON in a thread).

Checked: the receiver gets ``VqmonBlack`` firing for stream ``e2e-cam`` (routed to the pager
receiver, severity critical from the monitor's alert engine), then its ``resolved`` notice
while vqmon still runs (so the alert cleared because the picture came back, not because the
target vanished); the monitor's own events in Redis (``vqmon:events``) say the same.

Every process is started in its own session and killed at the end (SIGTERM, then SIGKILL).
Needs Debian's ``prometheus`` and ``prometheus-alertmanager``; skipped without them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, SAMPLES, vqmon_command, wait_for
from monitor.redis_server import free_port

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
RULES = ROOT / "deploy" / "prometheus" / "rules" / "vqmon.rules.yml"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

STREAM = "e2e-cam"
FPS = 25
CLEAN_HEAD, BLACK, CLEAN_TAIL = 4.0, 16.0, 16.0  # seconds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"),
    pytest.mark.skipif(ALERTMANAGER is None,
                       reason="alertmanager not installed (apt-get install prometheus-alertmanager)"),
]


# -- the test clip ----------------------------------------------------------------------------------

def make_clip(path: Path) -> None:
    """bikes.mp4 (looped) with a black part, H.264 at 25 fps, written with PyAV."""
    import av
    with av.open(str(SAMPLES / "bikes.mp4")) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    black = np.zeros_like(frames[0])
    n = int((CLEAN_HEAD + BLACK + CLEAN_TAIL) * FPS)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(FPS), options={"preset": "ultrafast", "crf": "20"})
        vs.width, vs.height, vs.pix_fmt = black.shape[1], black.shape[0], "yuv420p"
        for i in range(n):
            t = i / FPS
            img = black if CLEAN_HEAD <= t < CLEAN_HEAD + BLACK else frames[i % len(frames)]
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode())


# -- a webhook receiver -------------------------------------------------------------------------------

class Receiver:
    """Collects Alertmanager's webhook POSTs: ``(time.monotonic(), path, payload)``."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, str, dict]] = []
        lock = self.lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    posts.append((time.monotonic(), self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, alertname: str) -> list[tuple[float, str, dict]]:
        """(received, status, alert) of every notified alert named ``alertname``."""
        with self.lock:
            return [(t, a["status"], a) for t, _, p in self.posts for a in p.get("alerts", [])
                    if a["labels"].get("alertname") == alertname]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- processes ------------------------------------------------------------------------------------------

def _start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session, SIGKILL what is left after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    except ProcessLookupError:
        pass
    proc.wait(5)


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def _ready(url: str, proc: subprocess.Popen, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{proc.args[0]} exited ({proc.returncode}): {log.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def prometheus_config(vqmon_port: int, am_port: int, prom_port: int) -> dict:
    """deploy/prometheus/prometheus.yml with 1 s intervals, our ports and the rules by absolute path."""
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(RULES)]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    jobs["vqmon"].update(scrape_interval="1s", scrape_timeout="1s")
    jobs["vqmon"]["static_configs"][0]["targets"] = [f"127.0.0.1:{vqmon_port}"]
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
    return cfg


def alertmanager_config(hook_port: int) -> dict:
    """deploy/alertmanager/alertmanager.yml with 1 s waits and the webhooks on our receiver."""
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    cfg["global"]["resolve_timeout"] = "1m"
    route = cfg["route"]
    route.update(group_wait="1s", group_interval="1s")
    for sub in route.get("routes", []):
        if "group_wait" in sub:
            sub["group_wait"] = "1s"
    for rcv in cfg["receivers"]:
        for hook in rcv.get("webhook_configs", []):
            hook["url"] = hook["url"].replace("127.0.0.1:9095", f"127.0.0.1:{hook_port}")
    return cfg


# -- the test ---------------------------------------------------------------------------------------------

def test_black_picture_fires_and_resolves_through_prometheus_and_alertmanager(tmp_path, redis_server):
    clip = tmp_path / "clean-black-clean.mp4"
    make_clip(clip)
    vqmon_cmd = vqmon_command()  # before the clock starts: it may import the CLI once
    receiver = Receiver()
    procs: list[subprocess.Popen] = []
    try:
        vq_port, prom_port, am_port = free_port(), free_port(), free_port()

        (tmp_path / "am.yml").write_text(yaml.safe_dump(alertmanager_config(receiver.port)))
        am_log = tmp_path / "alertmanager.log"
        am = _start([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}",
                     f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                     "--cluster.listen-address=", "--log.level=warn"], am_log)
        procs.append(am)

        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(vq_port, am_port, prom_port)))
        prom_log = tmp_path / "prometheus.log"
        prom = _start([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                       f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                       f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], prom_log)
        procs.append(prom)

        (tmp_path / "vqmon.yaml").write_text(yaml.safe_dump({
            "streams": [{"name": STREAM, "url": str(clip), "sample_rate": 2, "loop": False}],
            "engine": {"backend": "cpu"},
            "redis": {"url": redis_server.url},
            "metrics": {"listen": f"127.0.0.1:{vq_port}"},
            "console": False,
        }))
        vq_log = tmp_path / "vqmon.log"
        vq = _start([*vqmon_cmd, "run", "-c", str(tmp_path / "vqmon.yaml"), "--no-console", "--duration", "150"],
                    vq_log, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        procs.append(vq)

        wait_for(lambda: _ready(f"http://127.0.0.1:{am_port}/-/ready", am, am_log), 30, message="alertmanager")
        wait_for(lambda: _ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log), 30,
                 message="prometheus")
        # the rules file was loaded as it is: every group of ours is there
        groups = _get_json(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
        assert {g["name"] for g in groups} == {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]}
        assert any(g["file"] == str(RULES) for g in groups)

        # vqmon up and scraped (its model loads first: allow for a slow, shared machine)
        def scraped() -> bool:
            if vq.poll() is not None:
                raise AssertionError(f"vqmon exited ({vq.returncode}): {vq_log.read_text()[-3000:]}")
            q = _get_json(f"http://127.0.0.1:{prom_port}/api/v1/query?query=vqmon_stream_up")
            return any(r["metric"].get("stream") == STREAM and r["value"][1] == "1" for r in q["data"]["result"])
        wait_for(scraped, 90, interval=0.5, message="vqmon's stream up in Prometheus")
        t_up = time.monotonic()

        # black from 4 s to 20 s of the clip: engine start ~6 s, Prometheus `for: 10s` -> ~17 s
        def firing():
            assert vq.poll() is None, f"vqmon exited early: {vq_log.read_text()[-3000:]}"
            return [a for _, st, a in receiver.alerts("VqmonBlack") if st == "firing"]
        fired = wait_for(firing, 45, interval=0.5, message="VqmonBlack firing at the webhook")
        t_fired = time.monotonic()
        labels = fired[0]["labels"]
        assert labels["stream"] == STREAM and labels["condition"] == "black"
        assert labels["severity"] == "critical" and labels["job"] == "vqmon"
        with receiver.lock:
            paths = {path for _, path, p in receiver.posts
                     if any(a["labels"].get("alertname") == "VqmonBlack" for a in p["alerts"])}
        assert paths == {"/pager"}  # critical -> the pager receiver
        # the picture comes back at 20 s: clear after 1 s, Prometheus resolves, AM notifies
        resolved = wait_for(lambda: [a for _, st, a in receiver.alerts("VqmonBlack") if st == "resolved"],
                            30, interval=0.5, message="VqmonBlack resolved at the webhook")
        t_resolved = time.monotonic()
        assert resolved[0]["labels"]["stream"] == STREAM
        assert vq.poll() is None, "vqmon ended before the resolution: it must come from the clean picture"
        q = _get_json(f"http://127.0.0.1:{prom_port}/api/v1/query?query="
                      "vqmon_alert_active%7Bcondition%3D%22black%22%7D")
        assert [r["value"][1] for r in q["data"]["result"]] == ["0"]
        # nothing else was paged: a black picture is one cause, one page
        with receiver.lock:
            paged = {a["labels"]["alertname"] for _, path, p in receiver.posts if path == "/pager"
                     for a in p["alerts"]}
        assert paged == {"VqmonBlack"}, paged

        # the monitor's own events say the same
        events = [f for _, f in redis_server.client().xrange("vqmon:events")
                  if f[b"stream"] == STREAM.encode() and f[b"condition"] == b"black"]
        kinds = [e[b"kind"] for e in events]
        assert kinds[0] == b"start" and kinds[-1] == b"resolved", kinds
        duration = float(events[-1][b"duration"])
        assert BLACK - 1.5 <= duration <= BLACK + 1.5, duration
        print(f"\nvqmon up -> VqmonBlack firing at the webhook {t_fired - t_up:.1f} s, "
              f"-> resolved {t_resolved - t_up:.1f} s; engine black event duration {duration:.1f} s")
    finally:
        for p in reversed(procs):
            _stop(p)
        receiver.close()
