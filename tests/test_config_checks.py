"""What ``check-config`` and the start of ``run`` refuse (issue 20, F6): duplicate YAML keys, a
backend or model that does not exist, a URL whose protocol this FFmpeg cannot open."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, parse_config
from monitor.preflight import input_protocols, scheme_problem
from monitor.run_command import register

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "monitor" / "samples" / "bikes.mp4"


def _vqmon(capsys, *argv: str) -> tuple[int, str]:
    """``vqmon ARGV`` in this process (no jemalloc re-exec): exit code and stderr."""
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(list(argv))
    rc = args.func(args)
    return rc, capsys.readouterr().err


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "vqmon.yaml"
    path.write_text(text)
    return path


DUPLICATE = """\
streams:
  - name: cam
    url: rtsp://127.0.0.1:1/first
    sample_rate: 2
    url: rtsp://127.0.0.1:1/second
"""


def test_a_duplicate_key_is_refused_naming_both_lines():
    with pytest.raises(ConfigError) as e:
        parse_config(DUPLICATE, source="vqmon.yaml")
    msg = str(e.value)
    assert "duplicate key 'url'" in msg and "first at line 3" in msg and "again at line 5" in msg


def test_duplicate_keys_are_refused_by_check_config_and_run(tmp_path, capsys):
    path = _write(tmp_path, DUPLICATE)
    for argv in (["check-config", str(path)], ["run", "-c", str(path)]):
        rc, err = _vqmon(capsys, *argv)
        assert rc == 2 and "duplicate key 'url'" in err and "line 5" in err, (argv, err)


def test_merge_keys_may_still_be_overridden():
    cfg = parse_config("streams:\n  - &cam {name: a, url: /a.mp4, sample_rate: 2}\n"
                       "  - <<: *cam\n    name: b\n    sample_rate: 3\n")
    assert [(s.name, s.url, s.sample_rate) for s in cfg.streams] == [("a", "/a.mp4", 2), ("b", "/a.mp4", 3)]


def test_check_config_refuses_an_unknown_backend_and_model(tmp_path, capsys):
    path = _write(tmp_path, f"streams: [{{name: a, url: {CLIP}, model: nosuch}}]\nengine: {{backend: quantum}}\n")
    rc, err = _vqmon(capsys, "check-config", str(path))
    assert rc == 2
    assert "engine.backend: Input should be 'cpu', 'cuda', 'tensorrt' or 'auto' (got 'quantum')" in err
    path = _write(tmp_path, f"streams: [{{name: a, url: {CLIP}}}, {{name: b, url: {CLIP}, model: nosuch}}]\n")
    rc, err = _vqmon(capsys, "check-config", str(path))
    assert rc == 2
    assert "streams[1] 'b'.model: 'nosuch' is not a model: use one of bifusion, glint" in err
    assert "streams[0]" not in err


def test_backend_options_are_those_of_the_backend(tmp_path, capsys):
    """Each backend takes its own options (engines.backends): a key of another backend, or a
    misspelt one, is refused naming it; those of ``auto`` are sections per backend it may pick."""
    for options, field in (("{threads: 2, compile: false}", "engine.options.cpu.compile"),
                           ("{thread: 2}", "engine.options.cpu.thread")):
        path = _write(tmp_path, f"streams: [{{name: a, url: {CLIP}}}]\nengine: {{backend: cpu, options: {options}}}\n")
        rc, err = _vqmon(capsys, "check-config", str(path))
        assert rc == 2 and f"{field}: unknown field" in err and "1 error(s)" in err, err
    cfg = parse_config(f"streams: [{{name: a, url: {CLIP}}}]\n"
                       "engine: {backend: auto, options: {cpu: {threads: 2}, cuda: {compile: false}}}\n")
    assert (cfg.engine.options.cpu.threads, cfg.engine.options.cuda.compile) == (2, False)
    assert parse_config(f"streams: [{{name: a, url: {CLIP}}}]\n").engine.options.backend == "auto"
    with pytest.raises(ConfigError, match="engine.options.cpu.runtime"):
        parse_config(f"streams: [{{name: a, url: {CLIP}}}]\nengine: {{backend: cpu, options: {{runtime: gpu}}}}\n")


def test_run_refuses_them_before_starting_anything(tmp_path, capsys):
    path = _write(tmp_path, f"streams: [{{name: a, url: {CLIP}}}]\nengine: {{backend: quantum}}\n"
                  "redis: {enabled: false}\nmetrics: {enabled: false}\n")
    rc, err = _vqmon(capsys, "run", "-c", str(path))
    assert rc == 2 and err.startswith("vqmon run: invalid configuration:") and "'quantum'" in err


def test_protocols_are_those_of_pyavs_ffmpeg():
    protocols = input_protocols()
    assert protocols is not None and {"file", "tcp", "udp", "http", "https", "rtmp"} <= protocols
    for scheme in ("file", "rtsp", "rtsps", "http", "https", "udp", "rtp", "rtmp", "tcp"):
        assert scheme_problem(scheme) is None, scheme
    assert "http://" in scheme_problem("hls")  # FFmpeg has no hls:// protocol: the playlist URL


@pytest.mark.skipif("srt" in (input_protocols() or {"srt"}), reason="this FFmpeg has libsrt")
def test_srt_is_refused_where_ffmpeg_lacks_libsrt(tmp_path, capsys):
    path = _write(tmp_path, "streams:\n  - {name: contribution, url: 'srt://127.0.0.1:9000?mode=caller'}\n"
                  f"  - {{name: kept, url: 'srt://127.0.0.1:9001', enabled: false}}\n  - {{name: b, url: {CLIP}}}\n")
    rc, err = _vqmon(capsys, "check-config", str(path))
    assert rc == 2 and "1 error(s)" in err
    assert "streams[0] 'contribution'.url: srt:// cannot be opened here: SRT needs an FFmpeg built with libsrt" in err
    assert "kept" not in err  # disabled: never opened


def test_the_example_configuration_passes(monkeypatch, capsys):
    monkeypatch.setenv("CAM1_PASSWORD", "pw1")
    monkeypatch.setenv("REDIS_PASSWORD", "pw2")
    example = ROOT / "deploy" / "vqmon.example.yaml"
    load_config(example)
    rc, err = _vqmon(capsys, "check-config", str(example))
    assert rc == 0, err
