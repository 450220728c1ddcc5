"""Frames of any depth, layout and size become the same model input."""
import numpy as np
import pytest
import torch

from engines.preprocess import FrameError, prepare_batch, to_rgb_uint8
from engines.types import RegionMap


def test_gray_rgba_16bit_are_equivalent_to_rgb():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((50, 70, 1), 7, np.uint8)], axis=2)
    deep = gray.astype(np.uint16) * 257
    for variant in (gray, gray[:, :, None], rgba, deep):
        np.testing.assert_array_equal(to_rgb_uint8(variant), rgb)


@pytest.mark.parametrize("shape", [(8, 8, 3), (17, 33, 3), (1080, 1920, 3), (2160, 3840, 3), (601, 9, 3)])
def test_any_size_gives_model_input(shape):
    frame = np.full(shape, 128, np.uint8)
    x = prepare_batch([frame], 384)
    assert x.shape == (1, 3, 384, 384)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("bad,reason", [
    (np.zeros((4, 4, 3), np.uint8), "smaller"),
    (np.zeros((10, 10, 2), np.uint8), "channels"),
    (np.zeros((10, 10, 3), np.float32), "dtype"),
    (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
])
def test_bad_frames_are_refused_with_reason(bad, reason):
    with pytest.raises(FrameError, match=reason):
        to_rgb_uint8(bad)


def test_region_map_maps_back_to_frame():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = RegionMap(values, frame_height=300, frame_width=401)
    assert m.cell_box(0, 0) == (0, 0, 100, 100)
    assert m.cell_box(2, 3)[2:] == (401, 300)
    # cells tile the frame exactly
    full = m.to_frame()
    assert full.shape == (300, 401)
    x0, y0, x1, y1 = m.cell_box(1, 2)
    assert np.all(full[y0:y1, x0:x1] == values[1, 2])
    assert m.worst(2) == [(0, 0, 0.0), (0, 1, 1.0)]
