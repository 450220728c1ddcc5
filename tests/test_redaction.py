"""URL passwords holding any character (``/ # ? @ : %`` too) never show, and reach FFmpeg encoded.

Issue 20, F1: ``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``, so with
``rtsp://admin:Pa/ss9word@host/x`` no ``@`` was seen and the password went out in clear (start-up
log, check-config, /api/streams, the Redis state hash), and FFmpeg, splitting the same way,
failed with "Invalid argument".
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SAMPLES, redis_writer, vqmon_command, wait_for
from monitor.config import Scrubber, config_from_dict, ffmpeg_url, redact_url
from monitor.redis_server import EmbeddedRedis, RedisServerError, free_port
from monitor.worker_setup import protocol_options

URL_TEMPLATE = "rtsp://admin:{}@127.0.0.1:8554/cam1"
REDACTED = URL_TEMPLATE.format("***")
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=4, max_size=24)


def _reference_texts() -> str:
    """Everything the checks below print around the password, with the password left out."""
    cfg = config_from_dict({"streams": [{"name": "cam1", "url": URL_TEMPLATE.format("x")}]}, env={})
    return "\n".join([URL_TEMPLATE.format(""), f"error opening {REDACTED}", cfg.summary(), repr(cfg)])


REFERENCE = _reference_texts()


@settings(max_examples=400, deadline=None)
@given(pw=PRINTABLE)
def test_any_printable_password_is_redacted(pw):
    assume(pw not in REFERENCE)  # else finding it in the output would prove nothing
    url = URL_TEMPLATE.format(pw)
    red = redact_url(url)
    assert red == REDACTED  # the host and path stay visible
    assert pw not in red
    scrub = Scrubber([url])
    for text in (f"error opening {url}", f"error opening {ffmpeg_url(url)}"):  # as configured, as FFmpeg got it
        out = scrub(text)
        assert pw not in out and out == f"error opening {REDACTED}", out
    cfg = config_from_dict({"streams": [{"name": "cam1", "url": "rtsp://admin:${CAM_PW}@127.0.0.1:8554/cam1"}]},
                           env={"CAM_PW": pw})
    assert cfg.streams[0].url == url
    for text in (cfg.summary(), repr(cfg), repr(cfg.streams[0])):
        assert pw not in text
        assert "admin:***@127.0.0.1:8554/cam1" in text


@settings(max_examples=400, deadline=None)
@given(pw=PRINTABLE)
def test_ffmpeg_url_keeps_host_and_password_apart(pw):
    url = URL_TEMPLATE.format(pw)
    enc = ffmpeg_url(url)
    assert ffmpeg_url(enc) == enc
    u = urllib.parse.urlsplit(enc)  # FFmpeg's av_url_split cuts the same way
    assert (u.hostname, u.port, u.path, u.username) == ("127.0.0.1", 8554, "/cam1", "admin")
    assert urllib.parse.unquote(u.password) == urllib.parse.unquote(pw)


def test_pyav_opens_the_encoded_url_and_reaches_the_host():
    """A '/' in the password: FFmpeg connects to 127.0.0.1:1 (refused) instead of failing on the URL."""
    import av
    url = ffmpeg_url("rtsp://admin:Pa/ss9word@127.0.0.1:1/test")
    assert url == "rtsp://admin:Pa%2Fss9word@127.0.0.1:1/test"
    with pytest.raises(OSError) as ei:
        av.open(url, options=protocol_options("rtsp", 1.0, 1.0), timeout=(2.0, 2.0))
    assert ei.value.errno == errno.ECONNREFUSED, (ei.value.errno, ei.value.strerror)


# ------------------------------------------------------------------------------------------
# end to end: `vqmon run -c FILE` with such a password, everything it shows or stores
# ------------------------------------------------------------------------------------------

CAM_PW = "Pa/ss#9?w@rd%"


def _password_forms(pw: str) -> set[str]:
    """As written and percent-encoded (fully, form-style, and as RFC 3986 userinfo allows)."""
    return {pw, urllib.parse.quote(pw, safe=""), urllib.parse.quote_plus(pw),
            urllib.parse.quote(pw, safe="!$&'()*+,;=")}


def _redis_everything(client) -> list[bytes]:
    """Every key and every value of every key (streams, hashes, strings, sets, lists)."""
    out: list[bytes] = []
    for key in client.scan_iter("*", count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"stream":
            for entry_id, fields in client.xrange(key):
                out += [entry_id, *fields.keys(), *fields.values()]
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == b"string":
            out.append(client.get(key))
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"list":
            out += list(client.lrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} of {key!r}")
    return out


def _http(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


@pytest.mark.timeout(180)
def test_password_with_delimiters_never_shown_end_to_end(tmp_path):
    try:
        redis = EmbeddedRedis().start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    port = free_port()
    cfg = tmp_path / "vqmon.yaml"
    cfg.write_text(f"""
defaults:
  sample_rate: 2
  reconnect: {{initial_delay: 0.3, max_delay: 1}}
streams:
  - name: clip
    url: {SAMPLES / 'bikes.mp4'}
    loop: true
  - name: cam
    url: "rtsp://admin:${{CAM_PW}}@127.0.0.1:1/test"
engine: {{backend: cpu}}
redis: {{url: "{redis.url}"}}
metrics: {{listen: "127.0.0.1:{port}"}}
log_level: debug
""")
    env = dict(os.environ, CAM_PW=CAM_PW, PYTHONPATH=str(ROOT))
    forms = _password_forms(CAM_PW)
    assert len(forms) >= 2 and not any(f in cfg.read_text() for f in forms)
    shown: dict[str, str] = {}

    check = subprocess.run([*vqmon_command(), "check-config", str(cfg)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "cam: rtsp://admin:***@127.0.0.1:1/test" in check.stdout, check.stdout
    shown["check-config"] = check.stdout + check.stderr

    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    client = redis.client()
    try:
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([*vqmon_command(), "run", "-c", str(cfg), "--no-console"],
                                    cwd=ROOT, env=env, stdout=fo, stderr=fe)
            try:
                def cam_down() -> dict | None:
                    if proc.poll() is not None:
                        raise AssertionError(f"vqmon run exited: {err.read_text()[-3000:]}")
                    state = client.hgetall("vqmon:cam:state")
                    if client.xlen("vqmon:clip:records") < 2 or state.get(b"up") != b"0" or not state.get(b"error"):
                        return None
                    try:
                        cam = json.loads(_http(port, "/api/streams/cam"))["stream"]
                    except OSError:
                        return None
                    down = cam.get("up") is False and cam.get("error") and cam.get("reconnects", 0) >= 1
                    return cam if down else None

                cam = wait_for(cam_down, 120, interval=0.5, message="the clip scored and the camera down")
                state = client.hgetall("vqmon:cam:state")
                # FFmpeg got the encoded URL: it reached 127.0.0.1:1, no "Invalid argument"
                assert b"refused" in state[b"error"].lower(), state
                assert "refused" in cam["error"].lower(), cam
                assert state[b"url"] == b"rtsp://admin:***@127.0.0.1:1/test", state
                assert cam["url"] == "rtsp://admin:***@127.0.0.1:1/test", cam
                for path in ("/metrics", "/api/streams", "/api/streams/cam", "/api/streams/clip",
                             "/healthz", "/readyz"):
                    try:
                        shown[path] = _http(port, path)
                    except urllib.error.HTTPError as e:  # /readyz may answer 503 with the camera down
                        shown[path] = e.read().decode()
                assert 'vqmon_stream_up{stream="cam"} 0.0' in shown["/metrics"]
                shown["redis"] = "\n".join(b.decode("utf-8", "replace") for b in _redis_everything(client))
                assert "admin:***@127.0.0.1:1/test" in shown["redis"]
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        # after the stop: the final state and events written at exit, and every log line
        shown["redis after stop"] = "\n".join(b.decode("utf-8", "replace") for b in _redis_everything(client))
        shown["logs"] = out.read_text(errors="replace") + err.read_text(errors="replace")
    finally:
        redis.cleanup()
    assert "admin:***@127.0.0.1:1/test" in shown["logs"]  # the start-up summary, redacted
    for where, text in shown.items():
        for form in forms:
            assert form not in text, f"password form {form!r} leaked into {where}"


# ------------------------------------------------------------------------------------------
# the console (rich table, log summary) and a Redis password through an outage
# ------------------------------------------------------------------------------------------

REDIS_PW = "Rd/s3#cr?t@9%"


def _assert_no_password(shown: dict[str, str], pw: str) -> None:
    for where, text in shown.items():
        for form in _password_forms(pw):
            assert form not in text, f"password form {form!r} leaked into {where}"


def _get_text(m, path: str) -> str:
    host, port = m.metrics_address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:  # /readyz answers 503 while something is down
        return e.read().decode()


def _console_text(m, capsys) -> str:
    """The live console as `vqmon run` on a terminal shows it (rich table), then the log summary."""
    from monitor.console import LiveConsole, LogSummary
    capsys.readouterr()
    with LiveConsole(m) as view:
        view.update()
    LogSummary(m, every=0.0).update()
    return capsys.readouterr().out


def test_console_table_with_a_url_password(cpu_engine, capsys, caplog, monkeypatch):
    """The rich status table (and the log summary that stands in for it off a terminal) of a
    stream whose URL carries a password, while that stream fails."""
    from monitor.service import Monitor
    caplog.set_level("INFO", logger="monitor")
    monkeypatch.setenv("COLUMNS", "250")  # wide enough for the whole error column
    closed = free_port()
    cfg = config_from_dict({
        "defaults": {"reconnect": {"initial_delay": 0.3, "max_delay": 1.0}},
        "streams": [{"name": "cam", "url": f"rtsp://admin:${{CAM_PW}}@127.0.0.1:{closed}/live"}],
        "redis": {"enabled": False}, "metrics": {"enabled": False}, "console": False,
    }, env={"CAM_PW": CAM_PW})
    m = Monitor(cfg, engines={"bifusion": cpu_engine}, announce=lambda text: None)
    m.start()
    try:
        wait_for(lambda: m.streams["cam"].error and m.streams["cam"].reconnects >= 1, 60,
                 message="the camera failing and retried")
        shown = {"console": _console_text(m, capsys)}
        shown["logs"] = caplog.text
    finally:
        m.stop()
    assert re.search(r"│ cam +│ \w+ +│.*│ cannot open: .*Connection refused +│", shown["console"]), shown["console"]
    assert re.search(r"stream cam: \w+ fps=.* error=cannot open: .*Connection refused", shown["logs"]), shown["logs"]
    _assert_no_password(shown, CAM_PW)


def test_redis_password_never_shown_through_an_outage(cpu_engine, capsys, caplog):
    """Redis asks for a password, given in its URL (percent-encoded: it holds / # ? @ %); Redis
    goes away while frames are scored: logs, the HTTP API, health, metrics, the console and the
    sink's own error never show it."""
    from monitor.service import Monitor
    caplog.set_level("DEBUG", logger="monitor")
    try:
        redis = EmbeddedRedis(password=REDIS_PW).start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    url = f"redis://:{urllib.parse.quote(REDIS_PW, safe='')}@127.0.0.1:{redis.port}/0"
    cfg = config_from_dict({
        "streams": [{"name": "clip", "url": str(SAMPLES / "bikes.mp4"), "loop": True, "sample_rate": 2.0}],
        "redis": {"url": url, "socket_timeout": 0.5, "flush_timeout": 0.5},
        "metrics": {"listen": "127.0.0.1:0"}, "console": False,
    })
    m = Monitor(cfg, engines={"bifusion": cpu_engine}, announce=lambda text: None)
    shown: dict[str, str] = {"summary": cfg.summary(), "repr": repr(cfg)}
    m.start()
    try:
        client = redis.client()
        # the password works: records arrive (the server refuses commands without it)
        wait_for(lambda: client.xlen("vqmon:clip:records") >= 1, 60, message="records in the password-protected Redis")
        client.close()
        redis.stop()  # the outage
        scored = m.streams["clip"].scored
        sink = redis_writer(m)
        wait_for(lambda: not sink.connected and sink.last_error and m.streams["clip"].scored >= scored + 2
                 and sink.buffered >= 1, 60, message="the sink down while frames are still scored")
        shown["sink error"] = sink.last_error
        shown["header"] = m.header()
        for path in ("/api/streams", "/api/streams/clip", "/readyz", "/healthz", "/metrics"):
            shown[path] = _get_text(m, path)
        shown["console"] = _console_text(m, capsys)
    finally:
        m.stop()
        redis.cleanup()
    shown["logs"] = caplog.text  # the stop's lost-records warning included
    assert "redis://:***@127.0.0.1" in shown["summary"]
    assert "redis: unavailable" in shown["logs"] and "redis DOWN" in shown["header"]
    assert json.loads(shown["/api/streams"])["instance"]["sinks"]["redis"]["connected"] is False
    _assert_no_password(shown, REDIS_PW)
