"""`vqmon engine build|list`: the cache is filled by a build and shown by list."""
import importlib.util
import json

import pytest
import torch

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
    # --weights none: the untrained model, as in score and run (other weights, another graph)
    assert main(["engine", "build", "--model", "glint", "--backend", "cpu", "--weights", "none"]) == 0
    capsys.readouterr()
    assert main(["engine", "list", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.gpu
def test_build_on_missing_tensorrt_says_why(capsys):
    # what is missing here, decided apart from the backend: no GPU, else no TensorRT packages
    if not torch.cuda.is_available():
        why = "torch sees no CUDA device"
    elif any(importlib.util.find_spec(m) is None for m in ("torch_tensorrt", "tensorrt")):
        why = "torch-tensorrt/TensorRT not importable"
    else:
        pytest.skip("CUDA and TensorRT are both here: nothing is missing")
    assert main(["engine", "build", "--model", "glint", "--backend", "tensorrt"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"cannot build glint on tensorrt: {why}" in err, err
