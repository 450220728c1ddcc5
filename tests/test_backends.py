"""Backends: CPU runtimes agree with torch eager; GPU backends fail clearly without a GPU."""
import importlib.util
import logging

import numpy as np
import pytest
import torch

from engines import create_model
from engines.backends import BackendUnavailable, create_backend
from engines.backends.cache import cache_key, weights_fingerprint
from engines.backends.cpu import CPUBackend
from engines.backends.cuda import batch_ladder, padded_size
from engines.backends.parity import ParityError, calibration_frames, check_parity, reference_scores
from engines.engine import QualityEngine
from engines.preprocess import prepare_batch


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQMON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module", params=["bifusion", "glint"])
def model(request):
    return create_model(request.param, weights="default")


@pytest.fixture(scope="module")
def calib(model):
    return prepare_batch(calibration_frames(), model.input_size)


def test_onnxruntime_matches_torch_eager(model, calib):
    eager = CPUBackend(model, max_batch=8, runtime="torch")
    ort = CPUBackend(model, max_batch=8, runtime="onnxruntime")
    assert (eager.runtime, ort.runtime) == ("torch", "onnxruntime")
    s_eager, m_eager = eager.infer(calib)
    s_ort, m_ort = ort.infer(calib)
    assert np.max(np.abs(s_eager - s_ort)) < 0.5
    assert np.max(np.abs(m_eager - m_ort)) < 0.5
    # and the parity check agrees
    assert check_parity(model, lambda x: ort.infer(x)[0], tolerance=0.5) < 0.5


def test_batches_larger_than_max_batch_are_split(model, calib):
    small = CPUBackend(model, max_batch=3, runtime="torch")
    big = CPUBackend(model, max_batch=16, runtime="torch")
    s_small, m_small = small.infer(calib)
    s_big, _ = big.infer(calib)
    assert s_small.shape == (len(calib),) and m_small.shape[0] == len(calib)
    np.testing.assert_allclose(s_small, s_big, atol=1e-3)


def test_parity_check_rejects_a_wrong_backend(model):
    with pytest.raises(ParityError, match="differ"):
        check_parity(model, lambda x: reference_scores(model, x) + 1.5, tolerance=1.0)
    assert check_parity(model, lambda x: reference_scores(model, x) + 0.5, tolerance=1.0) == pytest.approx(0.5, abs=1e-3)


def test_onnx_export_is_cached_per_weights(model, tmp_path):
    CPUBackend(model, runtime="onnxruntime")
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1
    CPUBackend(model, runtime="onnxruntime")
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx")) == files


def test_cache_key_follows_weights():
    a = create_model("glint", weights=None)
    b = create_model("glint", weights=None)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).add_(1e-3)
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert cache_key({"w": weights_fingerprint(a)}) != cache_key({"w": weights_fingerprint(b)})


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_gpu_backends_refuse_clearly_without_gpu(model, name):
    with pytest.raises(BackendUnavailable, match="CUDA"):
        create_backend(name, model)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_auto_falls_back_to_cpu_and_says_why(model, caplog):
    with caplog.at_level(logging.INFO, logger="engines.backends.auto"):
        backend = create_backend("auto", model)
    assert backend.name == "cpu"
    assert "no CUDA GPU" in backend.choice_reason
    assert any("auto -> cpu" in r.getMessage() for r in caplog.records)


def test_torch_tensorrt_import_guard():
    """Where the packages are missing the guard says so clearly; where they are, it imports them.
    Whether they are installed is decided here, apart from the guard, so a broken guard fails."""
    from engines.backends.tensorrt import import_torch_tensorrt
    installed = all(importlib.util.find_spec(m) is not None for m in ("torch_tensorrt", "tensorrt"))
    if installed:  # NVIDIA's PyTorch image
        ttrt, trt = import_torch_tensorrt()
        assert (ttrt.__name__, trt.__name__) == ("torch_tensorrt", "tensorrt")
    else:
        with pytest.raises(BackendUnavailable) as e:
            import_torch_tensorrt()
        assert "torch-tensorrt" in str(e.value) and "container" in str(e.value)


def test_batch_ladder():
    assert batch_ladder(8) == [1, 2, 4, 8]
    assert batch_ladder(6) == [1, 2, 4, 6]
    assert [padded_size(n, batch_ladder(8)) for n in (1, 3, 5, 8)] == [1, 4, 8, 8]


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        create_backend("tpu", create_model("glint", weights=None))


def test_engine_scores_frames_of_any_shape():
    engine = QualityEngine("glint", backend="cpu", max_batch=4)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(1080, 1920, 3), (31, 47), (200, 150, 4)]]
    preds = engine.score(frames)
    assert len(preds) == 3
    for f, p in zip(frames, preds):
        assert 0 <= p.score <= 100
        assert p.region_map.shape == (12, 12)
        assert (p.region_map.frame_height, p.region_map.frame_width) == f.shape[:2]
        assert p.region_map.values.min() - 1e-3 <= p.score <= p.region_map.values.max() + 1e-3
