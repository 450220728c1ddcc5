"""Backends: CPU runtimes agree with torch eager; GPU backends fail clearly without a GPU."""
import importlib.util
import logging
import os

import numpy as np
import pytest
import torch

from engines import create_model
from engines.backends import BACKENDS, BackendUnavailable, create_backend, options_class
from engines.backends.cache import cache_key, weights_fingerprint
from engines.backends.cpu import CPUBackend, CPUOptions
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
    eager = CPUBackend(model, 8, CPUOptions(runtime="torch"))
    ort = CPUBackend(model, 8, CPUOptions(runtime="onnxruntime"))
    assert (eager.runtime, ort.runtime) == ("torch", "onnxruntime")
    s_eager, m_eager = eager.infer(calib)
    s_ort, m_ort = ort.infer(calib)
    assert np.max(np.abs(s_eager - s_ort)) < 0.5
    assert np.max(np.abs(m_eager - m_ort)) < 0.5
    # and the parity check agrees
    assert check_parity(model, lambda x: ort.infer(x)[0], tolerance=0.5) < 0.5


def test_batches_larger_than_max_batch_are_split(model, calib):
    small = CPUBackend(model, 3, CPUOptions(runtime="torch"))
    big = CPUBackend(model, 16, CPUOptions(runtime="torch"))
    s_small, m_small = small.infer(calib)
    s_big, _ = big.infer(calib)
    assert s_small.shape == (len(calib),) and m_small.shape[0] == len(calib)
    np.testing.assert_allclose(s_small, s_big, atol=1e-3)


def test_parity_check_rejects_a_wrong_backend(model):
    with pytest.raises(ParityError, match="differ"):
        check_parity(model, lambda x: reference_scores(model, x) + 1.5, tolerance=1.0)
    assert check_parity(model, lambda x: reference_scores(model, x) + 0.5, tolerance=1.0) == pytest.approx(0.5, abs=1e-3)


def test_onnx_export_is_cached_per_weights(model, tmp_path):
    CPUBackend(model, options=CPUOptions(runtime="onnxruntime"))
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1
    CPUBackend(model, options=CPUOptions(runtime="onnxruntime"))
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


@pytest.mark.parametrize("name", ["cuda", "tensorrt", "cpu", "auto"])
def test_unknown_settings_are_refused_before_anything_starts(name):
    """No backend swallows a misspelt setting: its options class names it (even without a GPU)."""
    with pytest.raises(ValueError, match="compiled"):
        create_backend(name, create_model("glint", weights=None), compiled=False)


def test_each_backend_file_declares_its_registered_name():
    assert [options_class(name)().backend for name in BACKENDS] == list(BACKENDS)


def test_auto_runs_the_picked_backend_with_its_own_section(model):
    backend = create_backend("auto", model, max_batch=2, cpu={"runtime": "torch", "threads": 1})
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.name == expected
    if expected == "cpu":
        assert (backend.runtime, backend.threads) == ("torch", 1)


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
    # frames that are views of larger ones: the maps cover the originals, same cells and scores
    originals = engine.score(frames[:2], frame_sizes=[(2160, 3840), (62, 94)])
    assert [(p.region_map.frame_height, p.region_map.frame_width) for p in originals] == [(2160, 3840), (62, 94)]
    assert originals[0].region_map.cell_box(11, 11) == (3520, 1980, 3840, 2160)
    np.testing.assert_allclose(originals[1].region_map.values, preds[1].region_map.values, atol=1e-3)


def test_cpu_backend_scores_batches_side_by_side_as_it_scores_them_one_by_one(model, calib):
    """``parallel``: one ONNX Runtime session called from several threads at once (what the
    monitor's scoring threads do) gives each batch the scores it gets alone."""
    import threading

    backend = CPUBackend(model, None, CPUOptions(runtime="onnxruntime", parallel=2))
    assert (backend.parallel, backend.threads, backend.max_batch) == (2, 1, 1)
    assert CPUOptions().for_many_callers().parallel == os.cpu_count()  # the monitor's default
    alone = [backend.infer(calib[i:i + 1])[0][0] for i in range(len(calib))]
    side_by_side: dict[int, float] = {}

    def score(indices):
        for _ in range(3):
            for i in indices:
                side_by_side[i] = backend.infer(calib[i:i + 1])[0][0]

    threads = [threading.Thread(target=score, args=(range(k, len(calib), 2),)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [side_by_side[i] for i in range(len(calib))] == pytest.approx(alone, abs=1e-4)
    assert backend.describe() == "cpu (onnxruntime fp32, 2 batches at once x 1 thread)"
