"""DeviceBatcher (uint8 upload, resize/normalise on the backend's device) vs prepare_batch.

Here the device is the CPU (no GPU on CI): the same code runs, without pinning. The CUDA
tests at the end run only where torch sees a GPU and say so when skipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.engine import QualityEngine
from engines.images import read_rgb
from engines.preprocess import DeviceBatcher, FrameError, prepare_batch

ROOT = Path(__file__).resolve().parent.parent
LIVEC = ROOT.parent / "shared" / "datasets" / "livec-dev" / "images"
NO_CUDA = "torch sees no CUDA device here; the CUDA path runs only on a GPU machine"


def _frames(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    u8 = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    return {
        "model size": u8(384, 384, 3),      # the monitor's case: swscale already resized
        "720p": u8(720, 1280, 3),           # downscale
        "small": u8(17, 33, 3),             # upscale
        "minimum": u8(8, 8, 3),
        "gray": u8(50, 70),
        "gray 1ch": u8(61, 40, 1),
        "rgba": u8(300, 200, 4),
        "16 bit": rng.integers(0, 65536, (240, 320, 3), dtype=np.uint16),
    }


@pytest.mark.parametrize("name", list(_frames()))
def test_matches_prepare_batch_for_each_kind_of_frame(name):
    frame = _frames()[name]
    got = DeviceBatcher("cpu", 384)([frame, frame])
    want = prepare_batch([frame, frame], 384)
    assert got.shape == want.shape == (2, 3, 384, 384) and got.dtype == torch.float32
    assert got.is_contiguous()  # NCHW like prepare_batch: compiled backends guard on strides
    # same ops on the same layout: identical on the CPU (the GPU's kernels differ in rounding)
    assert float((got - want).abs().max()) <= 1e-5


def test_mixed_batch_keeps_frame_order():
    frames = list(_frames(1).values()) * 2  # shapes interleaved: packed by shape, returned in order
    got = DeviceBatcher("cpu", 224)(frames)
    want = prepare_batch(frames, 224)
    assert float((got - want).abs().max()) <= 1e-5


def test_bad_frames_are_refused_like_prepare_batch():
    b = DeviceBatcher("cpu")
    with pytest.raises(FrameError, match="empty"):
        b([])
    with pytest.raises(FrameError, match="smaller"):
        b([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(FrameError, match="dtype"):
        b([np.zeros((10, 10, 3), np.float32)])


def test_host_buffer_is_reused_for_same_or_smaller_batches_and_grows_when_needed():
    b = DeviceBatcher("cpu", 384)
    frame = _frames()["model size"]
    first = b([frame] * 4)
    kept = first.clone()
    ptr, cap = b.host.untyped_storage().data_ptr(), b.host.numel()
    assert cap >= 4 * frame.size
    for n in (4, 2, 1, 4):
        b([np.ascontiguousarray(255 - frame)] * n)
        assert b.host.untyped_storage().data_ptr() == ptr and b.host.numel() == cap
    # results do not alias the buffer: a later batch did not change an earlier result
    assert torch.equal(first, kept)
    b([frame] * 16)
    assert b.host.numel() >= 16 * frame.size > cap
    grown = b.host.untyped_storage().data_ptr()
    b([frame] * 3)
    assert b.host.untyped_storage().data_ptr() == grown
    assert not b.pinned  # pinning is for CUDA uploads only


def _real_frames() -> list[np.ndarray]:
    """Photographs of LIVE-C's dev split and decoded video frames (full size and the worker's 384x384)."""
    import av

    if not LIVEC.is_dir():
        pytest.skip(f"{LIVEC} not present (shared datasets)")
    frames = [read_rgb(p) for p in sorted(LIVEC.iterdir())[:10]]
    with av.open(str(ROOT / "monitor" / "samples" / "bigbuckbunny.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 40 == 0:
                frames.append(f.to_ndarray(format="rgb24"))
                frames.append(f.reformat(width=384, height=384, format="rgb24").to_ndarray())
            if len(frames) >= 18:
                break
    return frames


def test_scores_through_the_real_model_differ_by_under_one_point(cpu_engine):
    frames = _real_frames()
    host = np.array([p.score for p in cpu_engine.score(frames)])
    device, _ = cpu_engine.backend.infer(DeviceBatcher("cpu", cpu_engine.input_size)(frames))
    diff = float(np.max(np.abs(host - device)))
    assert diff < 1.0, diff
    assert diff < 1e-3  # on the CPU the inputs are identical; only the GPU adds rounding


def test_engine_picks_the_device_path_only_for_cuda_backends():
    host = QualityEngine("bifusion", backend="cpu", runtime="torch", max_batch=4)
    assert host.info["preprocess"].startswith("host")
    forced = QualityEngine("bifusion", backend="cpu", runtime="torch", max_batch=4, preprocess="device")
    assert forced.info["preprocess"] == "device cpu (uint8 upload)"
    frames = list(_frames(2).values())[:5]
    a = [p.score for p in host.score(frames)]
    b = [p.score for p in forced.score(frames)]
    assert np.max(np.abs(np.subtract(a, b))) < 1e-3
    with pytest.raises(ValueError, match="preprocess must be"):
        QualityEngine("bifusion", backend="cpu", preprocess="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the refusal only applies without it")
def test_cuda_device_without_cuda_is_refused_clearly():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        DeviceBatcher("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_upload_is_pinned_reused_and_close_to_cpu():
    b = DeviceBatcher("cuda", 384)
    frames = list(_frames(3).values())
    got = b(frames)
    assert got.device.type == "cuda" and b.host.is_pinned()
    want = prepare_batch(frames, 384)
    assert float((got.cpu() - want).abs().max()) < 1e-3  # normalised units (~1/4 of a grey level)
    ptr = b.host.untyped_storage().data_ptr()
    b(frames[:2])
    assert b.host.untyped_storage().data_ptr() == ptr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_engine_preprocesses_on_the_gpu_and_scores_like_cpu(cpu_engine):
    gpu = QualityEngine("bifusion", backend="cuda", compile=False, max_batch=8)
    assert gpu.info["preprocess"].startswith("device cuda (pinned")
    frames = _real_frames()
    a = np.array([p.score for p in gpu.score(frames)])
    b = np.array([p.score for p in cpu_engine.score(frames)])
    assert np.max(np.abs(a - b)) < 1.0
