"""Smaller holes of issue 20 (F7): an unresolvable host said in words, idle HTTP connections
bounded, stream names that are path segments refused, a Redis that wants a password said so.
Network traffic stays on 127.0.0.1; the name resolver is stubbed, never asked."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from conftest import wait_for
from monitor.config import ConfigError, config_from_dict

# -- (a) a host name that does not resolve ------------------------------------------------------


class _Stop(Exception):
    pass


class _Capture:
    """The worker's channel: keeps the messages, stops the worker at its first error state."""

    def __init__(self):
        self.messages: list[dict] = []

    def send(self, header: dict, payload=b"") -> None:
        self.messages.append(header)
        if header.get("state") == "error":
            raise _Stop


def _first_open_error(monkeypatch, url: str, resolver) -> str:
    """The error a worker reports when opening ``url`` fails as FFmpeg fails for an unknown host."""
    from engines.views import InputView
    from monitor import netdiag
    from monitor.source import StreamWorker
    from monitor.worker import _Worker

    def ffmpeg_open(self):  # what av.open raises for any host FFmpeg cannot resolve
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_Worker, "open", ffmpeg_open)
    monkeypatch.setattr(netdiag.socket, "getaddrinfo", resolver)
    cfg = config_from_dict({"streams": [{"name": "cam", "url": url}]}).streams[0]
    spec = StreamWorker(cfg, InputView(mode="resize", size=32), None).spec()
    chan = _Capture()
    with pytest.raises(_Stop):
        _Worker(spec, chan).run()
    return chan.messages[-1]["error"]


def test_an_unresolvable_host_is_named_as_such(monkeypatch):
    asked = []

    def resolver(host, *a, **kw):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    err = _first_open_error(monkeypatch, "rtsp://viewer:Secr3t@no-such-camera.example:554/stream1", resolver)
    assert asked == ["no-such-camera.example"]  # the host alone: no userinfo, no port
    assert err == ("cannot open: the host name 'no-such-camera.example' did not resolve "
                   "(Name or service not known) (OSError: Input/output error)")


def test_a_host_that_resolves_keeps_ffmpegs_error(monkeypatch):
    err = _first_open_error(monkeypatch, "rtsp://127.0.0.1:1/x", lambda *a, **kw: [])
    assert err == "cannot open: OSError: Input/output error"


def test_a_slow_resolver_does_not_hold_the_worker():
    from monitor.netdiag import unresolved_host
    gate = threading.Event()
    original = socket.getaddrinfo
    try:
        socket.getaddrinfo = lambda *a, **kw: gate.wait(10)
        t0 = time.monotonic()
        assert unresolved_host("slow.example", timeout=0.3) is None
        assert time.monotonic() - t0 < 2
    finally:
        socket.getaddrinfo = original
        gate.set()


# -- (b) idle connections to the live-view HTTP server ---------------------------------------


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return b"".join(iter(lambda: s.recv(4096), b""))


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (what it sent before, e.g. a 503, is read and dropped)."""
    s.setblocking(False)
    while True:
        try:
            if s.recv(4096) == b"":
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True


def test_idle_half_sent_connections_time_out_and_are_capped():
    from monitor.web.server import HttpServer
    server = HttpServer(_app, "127.0.0.1", 0, read_timeout=3.0, max_connections=4).start()
    port = server.address[1]
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(12):  # half-sent requests: a request line, no blank line after the headers
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            idle.append(s)
        # past the cap: answered 503 and closed at once, no thread each
        # (well before the read timeout: refused by the cap, not timed out)
        wait_for(lambda: sum(_closed_by_server(s) for s in idle) >= 8, 2.5, interval=0.05,
                 message="connections over the cap to be refused")
        assert threading.active_count() <= threads_before + 4
        # the idle ones under the cap are dropped after the read timeout, and the server answers again
        wait_for(lambda: all(_closed_by_server(s) for s in idle), 8, interval=0.1,
                 message="idle connections to time out")
        assert _get(port).endswith(b"ok")
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_a_refused_connection_gets_503():
    from monitor.web.server import HttpServer
    server = HttpServer(_app, "127.0.0.1", 0, read_timeout=2.0, max_connections=1).start()
    try:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as hold:
            hold.sendall(b"GET / HTTP/1.1\r\n")  # holds the only slot
            wait_for(lambda: _get(server.address[1]).startswith(b"HTTP/1.0 503"), 5, interval=0.1,
                     message="a 503 while the slot is held")
    finally:
        server.stop()


# -- (c) stream names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", "..", "...", "a/b", "", "x" * 65])
def test_names_that_are_not_safe_path_segments_are_refused(name):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"streams": [{"name": name, "url": "/a.mp4"}]})
    assert "1-64 of A-Z a-z 0-9 _ . - (not only dots)" in str(e.value)


@pytest.mark.parametrize("name", ["cam.1", ".hidden", "a..b", "-_-", "x" * 64])
def test_names_with_dots_among_other_characters_are_fine(name):
    assert config_from_dict({"streams": [{"name": name, "url": "/a.mp4"}]}).streams[0].name == name


# -- (d) a Redis that requires a password ---------------------------------------------------------


@pytest.fixture
def redis_with_password():
    from monitor.redis_server import EmbeddedRedis, RedisServerError
    try:
        server = EmbeddedRedis(password="S3cr3t-pw").start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    yield server
    server.cleanup()


@pytest.mark.parametrize("userinfo, expected", [
    ("", "authentication required: the Redis server wants a password"),
    (":Wr0ng-pw@", "authentication failed: the Redis server refused the user name or password"),
])
def test_redis_authentication_is_said_in_words(redis_with_password, caplog, userinfo, expected):
    from monitor.config import Scrubber
    from monitor.sinks.redis_writer import RedisWriter
    caplog.set_level(logging.WARNING, logger="monitor.sinks")
    url = redis_with_password.url.replace("redis://", "redis://" + userinfo)
    sink = RedisWriter(url, scrub=Scrubber([url]))
    sink.register_streams(["cam"])
    sink.start()
    try:
        wait_for(lambda: sink.last_error, 10, message="the connection error")
    finally:
        sink.stop(flush_timeout=0.2)
    assert sink.last_error.startswith(expected), sink.last_error
    assert "HELLO" not in sink.last_error
    for text in [sink.last_error, caplog.text]:
        assert "Wr0ng-pw" not in text and "S3cr3t-pw" not in text
