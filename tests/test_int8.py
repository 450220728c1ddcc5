"""The CPU backend's int8 precision: the shipped graph stays near fp32, and is refused (fp32, with
the reason) when its record does not vouch for the weights loaded; ONNX Runtime's spinning."""
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import engines.models
from engines import create_model
from engines.backends import create_backend
from engines.backends.cpu import CPUBackend, CPUOptions, int8_files
from engines.engine import QualityEngine
from engines.images import read_rgb
from engines.labelled import load_labelled_csv
from engines.views import InputView

from conftest import SAMPLES, SHARED

LIVEC = Path(os.environ.get("VQMON_LIVEC_DEV", SHARED / "datasets" / "livec-dev"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQMON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bifusion():
    return create_model("bifusion", weights="default")


def video_frames(n: int) -> list[np.ndarray]:
    """``n`` frames of the sample clip, one a second, as the monitor's workers send them."""
    from monitor.media import model_input, sample_frames

    view = InputView(mode="resize", size=384)  # the shipped bifusion's view
    frames = []
    for _, _, frame in sample_frames(SAMPLES / "bigbuckbunny.mp4", fps=1.0):
        frames.append(model_input(frame, view))
        if len(frames) == n:
            break
    return frames


@pytest.mark.skipif(not (LIVEC / "labels.csv").is_file(), reason="livec-dev (../shared) not available")
def test_shipped_int8_scores_near_fp32():
    """Within the acceptance bar (mean |Δ| <= 1 point) on a handful of livec-dev photos and
    video frames, maps included; and it is the int8 graph that ran (scores differ a little)."""
    data = load_labelled_csv(LIVEC / "labels.csv")
    pictures = [read_rgb(p) for p in data.paths[1:60:10]] + video_frames(4)
    fp32 = QualityEngine("bifusion", backend="cpu", precision="fp32")
    int8 = QualityEngine("bifusion", backend="cpu", precision="int8")
    assert int8.backend.precision == "int8" and "onnxruntime int8" in int8.info["backend_detail"]
    a, b = fp32.score(pictures), int8.score(pictures)
    delta = np.array([abs(x.score - y.score) for x, y in zip(a, b)])
    maps = np.array([np.abs(x.region_map.values - y.region_map.values).mean() for x, y in zip(a, b)])
    assert delta.mean() <= 1.0 and delta.max() <= 4.0, delta
    assert maps.mean() <= 2.5, maps
    assert delta.max() > 0  # fp32 twice would give equal scores


def test_other_weights_fall_back_to_fp32_saying_why(caplog):
    """The shipped int8 file was made from the shipped weights: untrained ones run fp32."""
    with caplog.at_level(logging.WARNING, logger="engines.backends.cpu"):
        engine = QualityEngine("bifusion", weights="none", backend="cpu", precision="int8")
    assert engine.backend.precision == "fp32"
    assert engine.info["backend_detail"].endswith(
        "; int8 not used: the int8 file was made for other weights)")
    assert [r.getMessage() for r in caplog.records] == [
        "bifusion: int8 not used, running fp32: the int8 file was made for other weights"]


@pytest.mark.parametrize("change, reason", [
    ({"accepted": False, "reason": "mean |Δscore| 2.1 > 1.00 on livec-dev"},
     "the int8 file failed its acceptance test (mean |Δscore| 2.1 > 1.00 on livec-dev)"),
    ({"weights_fingerprint": "0" * 16}, "the int8 file was made for other weights"),
    ({"input_size": 256}, "the int8 file takes 256 px input, the model 384"),
    (None, "no int8 file is shipped for this model"),
])
def test_a_record_that_does_not_vouch_for_the_weights_is_refused(bifusion, tmp_path, monkeypatch,
                                                                  change, reason):
    graph, record = int8_files("bifusion")
    shutil.copy(graph, tmp_path / graph.name)
    if change is not None:
        (tmp_path / record.name).write_text(json.dumps({**json.loads(record.read_text()), **change}))
    monkeypatch.setattr(engines.models, "SHIPPED_WEIGHTS_DIR", tmp_path)
    backend = CPUBackend(bifusion, 2, CPUOptions(precision="int8", threads=1, parallel=1))
    assert (backend.precision, backend.int8_unused) == ("fp32", reason)
    assert backend.describe() == f"cpu (onnxruntime fp32, 1 thread; int8 not used: {reason})"


def test_the_copied_record_itself_is_accepted(bifusion, tmp_path, monkeypatch):
    """The refusals above come from each change, not from the copying."""
    for path in int8_files("bifusion"):
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(engines.models, "SHIPPED_WEIGHTS_DIR", tmp_path)
    backend = CPUBackend(bifusion, 2, CPUOptions(precision="int8", threads=1, parallel=1))
    assert (backend.precision, backend.int8_unused) == ("int8", None)


def test_torch_runtime_has_no_int8(bifusion):
    backend = CPUBackend(bifusion, 2, CPUOptions(runtime="torch", precision="int8", threads=1, parallel=1))
    assert backend.describe() == "cpu (torch fp32, 1 thread; int8 not used: int8 runs only on ONNX Runtime)"


@pytest.mark.parametrize("spin, expected", [(False, "0"), (True, "1")])
def test_spinning_reaches_the_session(spin, expected):
    backend = CPUBackend(create_model("glint", weights=None), 2, CPUOptions(spin=spin, threads=2))
    opts = backend.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == expected
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == expected
    assert ("spinning" in backend.describe()) == spin


def test_misspelt_int8_settings_are_refused():
    with pytest.raises(ValueError, match="precission"):
        create_backend("cpu", create_model("glint", weights=None), precission="int8")
    with pytest.raises(ValueError, match="precision"):
        create_backend("cpu", create_model("glint", weights=None), precision="int4")
