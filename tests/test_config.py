"""Configuration: typed tree, defaults + per-stream overrides, ${ENV} secrets, errors that name the field."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from monitor.config import (ConfigError, Scrubber, config_from_dict, ffmpeg_url, load_config, parse_config,
                            redact_url, stream_name_for)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "vqmon.example.yaml"
SAMPLE = ROOT / "monitor" / "samples" / "bikes.mp4"


def _err(text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, env=env or {})
    return str(ei.value)


def test_defaults_and_overrides():
    cfg = parse_config("""
defaults:
  sample_rate: 2
  model: glint
  alerts: {quality_low: {threshold: 35}}
  timeouts: {open: 5}
streams:
  - name: cam1
    url: rtsp://10.0.0.5/stream1
    alerts: {quality_low: {critical_threshold: 10}, noisy: {enabled: false}}
    timeouts: {read: 3}
  - name: file.clip_2
    url: /media/clip.mp4
    sample_rate: 0.5
    model: bifusion
    loop: true
engine: {backend: cpu, max_batch: 4}
""", env={})
    a, b = cfg.streams
    assert (a.sample_rate, a.model, b.sample_rate, b.model) == (2, "glint", 0.5, "bifusion")
    assert a.timeouts.open == 5 and a.timeouts.read == 3 and b.timeouts.read == 10
    assert a.alerts["quality_low"] == {"threshold": 35, "critical_threshold": 10}
    rules = {r.condition: r for r in a.alert_rules()}
    assert rules["quality_low"].threshold == 35 and rules["quality_low"].critical_threshold == 10
    assert not rules["noisy"].enabled
    assert {r.condition: r for r in b.alert_rules()}["noisy"].enabled
    assert not a.is_file and b.is_file and b.loop and not a.loop
    assert cfg.engine.backend == "cpu" and cfg.engine.max_batch == 4
    assert cfg.models() == ["bifusion", "glint"]
    assert cfg.redis.url is None and cfg.redis.enabled  # embedded redis by default
    assert cfg.metrics.address == ("127.0.0.1", 9108)
    assert cfg.redis.state_ttl_for(a) == 5.0 and cfg.redis.state_ttl_for(b) == 6.0  # 3x interval, at least 5 s


def test_env_substitution_and_secrets_not_in_repr_or_summary():
    cfg = parse_config("""
streams:
  - name: cam
    url: rtsp://viewer:${CAM_PW}@127.0.0.1:8554/x?token=${TOKEN:-tok123}
redis: {url: "redis://:${REDIS_PW}@127.0.0.1:6379/0"}
""", env={"CAM_PW": "s3cret", "REDIS_PW": "redispw"})
    s = cfg.streams[0]
    assert s.url == "rtsp://viewer:s3cret@127.0.0.1:8554/x?token=tok123"
    assert s.redacted_url == "rtsp://viewer:***@127.0.0.1:8554/x?token=***"
    for text in (repr(cfg), str(cfg), repr(s), cfg.summary(), repr(cfg.redis)):
        assert "s3cret" not in text and "tok123" not in text and "redispw" not in text
    assert "$$" not in parse_config("streams: [{name: a, url: 'x$$y'}]", env={}).streams[0].url


def test_missing_env_variable_names_the_field():
    msg = _err("streams:\n  - {name: a, url: 'rtsp://u:${NOPE}@h/x'}\n")
    assert "streams[0].url" in msg and "NOPE" in msg


@pytest.mark.parametrize("text, field, reason", [
    ("streams: [{name: a, url: x, sample_rate: -1}]", "streams[0] 'a'.sample_rate", "greater than 0"),
    ("streams: [{name: a, url: x, samplerate: 1}]", "streams[0] 'a'.samplerate", "unknown field"),
    ("streams: [{name: 'bad name', url: x}]", "streams[0] 'bad name'.name", "not a valid stream name"),
    ("streams: [{name: 'a:b', url: x}]", "streams[0] 'a:b'.name", "not a valid stream name"),
    ("streams: [{url: x}]", "streams[0].name", "required"),
    ("streams: []", "streams", "at least 1"),
    ("defaults: {sample_rate: 0}\nstreams: [{name: a, url: x}]", "defaults.sample_rate", "greater than 0"),
    ("streams: [{name: a, url: x, alerts: {quality_low: {threshold: 50, clear_threshold: 10}}}]",
     "alerts.quality_low", "clear_threshold"),
    ("streams: [{name: a, url: x, alerts: {quality_low: {treshold: 50}}}]", "alerts.quality_low.treshold",
     "Extra inputs"),
    ("streams: [{name: a, url: x, detectors: {settings: {black_ratio_threshold: 3}}}]",
     "streams[0] 'a'.detectors.settings.black_ratio_threshold", "less than or equal to 1"),
    ("streams: [{name: a, url: x}]\nmetrics: {listen: nope}", "metrics.listen", "HOST:PORT"),
    ("streams: [{name: a, url: x}]\nredis: {url: 'http://h'}", "redis.url", "redis://"),
    ("streams: [{name: a, url: x}]\nengine: {max_batch: 0}", "engine.max_batch", "greater than or equal to 1"),
    ("streams: [{name: a, url: x}, {name: a, url: y}]", "streams[1].name", "already used"),
    ("streams: [{name: a, url: x}]\nbogus: 1", "bogus", "unknown field"),
])
def test_invalid_config_names_field_and_reason(text, field, reason):
    msg = _err(text)
    assert field in msg, msg
    assert reason in msg, msg


def test_yaml_syntax_error_has_position():
    msg = _err("streams:\n  - name: a\n    url: [unclosed\n")
    assert "line" in msg and "not valid YAML" in msg


def test_password_not_echoed_in_errors():
    msg = _err("streams: [{name: a, url: 'rtsp://u:s3cret@h/x', sample_rate: 0}]")
    assert "sample_rate" in msg and "s3cret" not in msg


def test_redact_and_scrub():
    url = "srt://host:9000?mode=caller&passphrase=verysecret&latency=200"
    assert redact_url(url) == "srt://host:9000?mode=caller&passphrase=***&latency=200"
    assert redact_url("/path/to/file.mp4") == "/path/to/file.mp4"
    assert redact_url("rtsp://user@h/x") == "rtsp://user@h/x"
    s = Scrubber(["rtsp://user:p%40ss@h:554/x", url])
    out = s("failed rtsp://user:p%40ss@h:554/x (p@ss) and verysecret")
    assert "p%40ss" not in out and "p@ss" not in out and "verysecret" not in out
    assert "rtsp://user:***@h:554/x" in out


def test_stream_names_from_sources():
    taken: set[str] = set()
    assert stream_name_for("/a/b/clip one.mp4", taken) == "clip_one"
    assert stream_name_for("/c/clip one.mp4", taken) == "clip_one-2"
    assert stream_name_for("rtsp://u:pw@cam.local:554/live/main", taken) == "cam.local-main"
    assert stream_name_for("udp://239.0.0.1:1234", taken) == "239.0.0.1"


def test_example_config_loads_with_env(monkeypatch):
    monkeypatch.setenv("CAM1_PASSWORD", "pw1")
    monkeypatch.setenv("REDIS_PASSWORD", "pw2")
    cfg = load_config(EXAMPLE)
    assert len(cfg.streams) >= 2
    assert all("pw1" not in line for line in cfg.summary().splitlines())


def test_check_config_command(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("streams: [{name: a, url: /tmp/x.mp4}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams: [{name: a, url: /tmp/x.mp4, sample_rate: fast}]\n")
    code = ("import argparse, sys; from monitor.run_command import register; p = argparse.ArgumentParser(); "
            "s = p.add_subparsers(dest='c'); register(s); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    r = subprocess.run([sys.executable, "-c", code, "check-config", str(good)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", code, "check-config", str(bad)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert "streams[0] 'a'.sample_rate" in r.stderr and "fast" in r.stderr


def test_check_config_models_of_old_scripts_still_checks_the_models(tmp_path, capsys):
    """``check-config --models`` (models are always checked now, monitor.preflight): still
    accepted, a configuration of real models passes, an unknown model fails naming it."""
    from engines import list_models
    from monitor.cli import main
    good = tmp_path / "good.yaml"
    good.write_text(f"defaults: {{model: glint}}\nstreams: [{{name: a, url: {SAMPLE}}}, "
                    f"{{name: b, url: {SAMPLE}, model: bifusion}}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"streams: [{{name: a, url: {SAMPLE}, model: nosuch}}, {{name: b, url: {SAMPLE}}}]\n")
    assert main(["check-config", str(good), "--models"]) == 0
    out = capsys.readouterr().out
    assert f"{good}: OK" in out and "model=glint" in out and "model=bifusion" in out
    assert main(["check-config", str(bad), "--models"]) == 2
    out, err = capsys.readouterr()
    assert f"{bad}: OK" not in out
    assert "streams[0] 'a'.model: 'nosuch' is not a model: use one of " + ", ".join(list_models()) in err


def _args(**kw) -> argparse.Namespace:
    base = dict(config=None, sources=[], demo=False, loop=False, sample_rate=None, model=None, backend=None,
                max_batch=None, weights=None, redis=None, metrics=None, no_console=False, duration=None,
                shard=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_quick_form_and_overrides(tmp_path):
    from monitor.run_command import demo_sources, run_overrides

    def build_config(args):
        return load_config(args.config, overrides=run_overrides(args))
    cfg = build_config(_args(sources=["/x/a.mp4", "rtsp://u:pw@cam/live"], sample_rate=3.0, backend="cpu",
                             redis="none", metrics="127.0.0.1:0", no_console=True))
    assert [s.name for s in cfg.streams] == ["a", "cam-live"]
    assert all(s.sample_rate == 3.0 for s in cfg.streams)
    assert not cfg.streams[0].loop
    assert cfg.engine.backend == "cpu" and not cfg.redis.enabled and cfg.metrics.address[1] == 0
    assert not cfg.console
    demo = build_config(_args(demo=True))
    assert len(demo.streams) == len(demo_sources()) >= 2
    assert all(s.loop and s.pace is not False and s.is_file for s in demo.streams)
    f = tmp_path / "c.yaml"
    f.write_text("defaults: {sample_rate: 1}\nstreams: [{name: a, url: /x.mp4, sample_rate: 5}]\n"
                 "redis: {url: 'redis://127.0.0.1:1/0'}\n")
    cfg = build_config(_args(config=str(f), sample_rate=0.5, redis="unix:///tmp/r.sock"))
    assert cfg.streams[0].sample_rate == 0.5 and cfg.redis.url == "unix:///tmp/r.sock"
    with pytest.raises(ConfigError, match="no stream"):
        build_config(_args())


def test_a_backend_override_drops_the_files_backend_options(tmp_path):
    from monitor.run_command import run_overrides
    f = tmp_path / "c.yaml"
    f.write_text("streams: [{name: a, url: /x.mp4}]\nengine: {backend: cuda, options: {compile: false}}\n")
    cfg = load_config(f, overrides=run_overrides(_args(config=str(f), backend="cpu", weights="none")))
    # cuda's options would be refused by cpu's class; "none" reaches create_model as the CLIs spell it
    assert (cfg.engine.backend, cfg.engine.options.backend, cfg.engine.weights) == ("cpu", "cpu", "none")
    same = load_config(f, overrides=run_overrides(_args(config=str(f), backend="cuda")))
    assert same.engine.options.compile is False  # the same backend keeps the file's options


def test_config_from_dict_roundtrip():
    cfg = config_from_dict({"streams": [{"name": "a", "url": "udp://0.0.0.0:1234", "options": {"fifo_size": 1000,
                                                                                           "reuse": True}}]})
    assert cfg.streams[0].options == {"fifo_size": "1000", "reuse": "true"}
    assert cfg.streams[0].scheme == "udp"


# ------------------------------------------------------------------------------------------
# passwords holding URL delimiters (issue 20, F1): '/', '#' and '?' end urlsplit's authority
# early, so the '@' was never seen and the password went out in clear
# ------------------------------------------------------------------------------------------

HOST_PATH = "127.0.0.1:8554/cam1"
ODD_PASSWORDS = ["Pa/ss9word", "Ha#sh9word", "Qu?est9on", "At@sign9x", "Co:lon9x", "Pe%zent9", "Pe%41cent",
                 "a/b#c?d@e:f%g h", "//##??", "x@127.0.0.2:9/y"]


def _forms(pw: str) -> set[str]:
    """The password as written, percent-decoded and percent-encoded."""
    return {pw, urllib.parse.unquote(pw), urllib.parse.quote(pw, safe=""),
            urllib.parse.quote(urllib.parse.unquote(pw), safe="")}


def _odd_config(pw: str, how: str):
    if how == "env":
        return config_from_dict({"streams": [{"name": "cam1", "url": f"rtsp://admin:${{CAM_PW}}@{HOST_PATH}"}]},
                                env={"CAM_PW": pw})
    return config_from_dict({"streams": [{"name": "cam1", "url": f"rtsp://admin:{pw}@{HOST_PATH}"}]}, env={})


@pytest.mark.parametrize("how", ["literal", "env"])
@pytest.mark.parametrize("pw", ODD_PASSWORDS)
def test_password_with_url_delimiters_is_redacted(pw, how):
    cfg = _odd_config(pw, how)
    s = cfg.streams[0]
    assert s.url == f"rtsp://admin:{pw}@{HOST_PATH}"
    assert redact_url(s.url) == s.redacted_url == f"rtsp://admin:***@{HOST_PATH}"
    # what a log line or an FFmpeg error may hold: the URL as configured, as FFmpeg got it,
    # and the bare password in each of its forms
    text = " | ".join([f"cannot open {s.url}", ffmpeg_url(s.url), *sorted(_forms(pw))])
    scrubbed = Scrubber([s.url])(text)
    assert f"cannot open rtsp://admin:***@{HOST_PATH}" in scrubbed
    shown = {"scrubbed": scrubbed, "repr": repr(s), "str": str(s), "config repr": repr(cfg),
             "summary": cfg.summary()}
    for form in _forms(pw):
        for where, out in shown.items():
            assert form not in out, f"{form!r} leaked into {where}: {out}"
    assert f"cam1: rtsp://admin:***@{HOST_PATH}" in cfg.summary()


@pytest.mark.parametrize("pw", ODD_PASSWORDS)
def test_ffmpeg_url_percent_encodes_the_credentials(pw):
    url = f"rtsp://admin:{pw}@{HOST_PATH}"
    enc = ffmpeg_url(url)
    assert ffmpeg_url(enc) == enc  # idempotent
    userinfo, _, hostpath = enc[len("rtsp://"):].rpartition("@")
    assert hostpath == HOST_PATH
    # only what RFC 3986 allows in userinfo, so FFmpeg's splitter finds the host after it
    assert re.fullmatch(r"(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*", userinfo), userinfo
    user, _, encoded_pw = userinfo.partition(":")
    assert user == "admin"
    u = urllib.parse.urlsplit(enc)
    assert (u.hostname, u.port, u.path) == ("127.0.0.1", 8554, "/cam1")
    # what the camera gets (FFmpeg percent-decodes RTSP/HTTP credentials): the password, a
    # valid %XX in it taken as already encoded, a lone '%' as itself
    assert urllib.parse.unquote(encoded_pw) == urllib.parse.unquote(pw)


def test_ffmpeg_url_exact_forms():
    assert ffmpeg_url("rtsp://admin:Pa/ss9word@127.0.0.1:1/test") == "rtsp://admin:Pa%2Fss9word@127.0.0.1:1/test"
    assert ffmpeg_url("rtsp://admin:Ha#sh?9@h/x?a=b#f") == "rtsp://admin:Ha%23sh%3F9@h/x?a=b#f"
    assert ffmpeg_url("https://u:p%40ss@h/x") == "https://u:p%40ss@h/x"          # already encoded
    assert ffmpeg_url("rtsp://u:100%@h/x") == "rtsp://u:100%25@h/x"               # a lone '%'
    assert ffmpeg_url("rtsp://us er:a@b@[::1]:554/x") == "rtsp://us%20er:a%40b@[::1]:554/x"
    for unchanged in ("rtsp://h/x", "/media/a b.mp4", "udp://@239.0.0.1:1234", "https://cdn/@user/x.m3u8",
                      "rtmp://u:p/w@h/app"):  # FFmpeg's RTMP does not percent-decode credentials
        assert ffmpeg_url(unchanged) == unchanged


def test_redact_keeps_secret_query_parameters_and_odd_passwords_apart():
    url = "rtsp://admin:Ha#sh?@127.0.0.1:554/live?token=t0ken&channel=1&sig=abc#frag"
    assert redact_url(url) == "rtsp://admin:***@127.0.0.1:554/live?token=***&channel=1&sig=***#***"
    out = Scrubber([url])(f"x {url} y t0ken abc Ha#sh? Ha%23sh%3F")
    assert all(s not in out for s in ("t0ken", "abc", "Ha#sh?", "Ha%23sh%3F")), out
    assert redact_url("https://cdn.example.com/@user/live.m3u8") == "https://cdn.example.com/@user/live.m3u8"
    assert redact_url("udp://@239.0.0.1:1234") == "udp://@239.0.0.1:1234"


def test_stream_names_never_hold_the_password():
    taken: set[str] = set()
    assert stream_name_for("rtsp://admin:Pa/ss9word@127.0.0.1:1/test", taken) == "127.0.0.1-test"
    assert stream_name_for("rtsp://admin:x/Secret9@127.0.0.1:1/", taken) == "127.0.0.1"
    assert stream_name_for("rtsp://admin:Ha#Secret9@cam.local/live/main", taken) == "cam.local-main"
    assert stream_name_for("rtsp://admin:Qu?Secret9@cam.local/live/main", taken) == "cam.local-main-2"
