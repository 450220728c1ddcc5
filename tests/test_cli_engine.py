"""`vqmon engine build|list`: the cache is filled by a build and shown by list."""
import json

import pytest

from monitor.cli import main


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("VQMON_JEMALLOC", "0")
    monkeypatch.setenv("VQMON_CACHE_DIR", str(tmp_path / "cache"))


def test_build_fills_cache_and_list_shows_it(capsys):
    assert main(["engine", "list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == ""
    assert main(["engine", "build", "--model", "glint", "--backend", "cpu"]) == 0
    assert "onnxruntime" in capsys.readouterr().err
    assert main(["engine", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["model"]) for r in rows] == [("onnx", "glint")]
    assert rows[0]["size_mb"] > 1


def test_build_on_missing_tensorrt_says_why(capsys):
    assert main(["engine", "build", "--model", "glint", "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "cannot build glint on tensorrt" in err
