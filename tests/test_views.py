"""Input views (engines.views): what the model sees of a frame, the same in every path."""
from __future__ import annotations

import av
import numpy as np
import pytest

from engines.types import RegionMap
from engines.views import InputView, cell_edges, fragments


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(720, 1280), (1080, 1920), (2160, 3840), (500, 500), (240, 320)])
def test_working_scale_brings_frames_near_the_training_pixel_scale(h, w):
    view = InputView("fragments")
    h2, w2 = view.working_shape(h, w)
    assert min(h2, w2) == max(min(min(h, w), 540), view.side)  # shrunk to 540, never below the input
    assert abs(w2 / h2 - w / h) < 0.01  # aspect ratio kept


def test_each_fragment_is_native_pixels_from_its_own_cell():
    rgb = _gradient(540, 960)
    out = fragments(rgb, 7, 32, rng=np.random.default_rng(3))
    ys, xs = cell_edges(540, 7), cell_edges(960, 7)
    for i in range(7):
        for j in range(7):
            patch = out[32 * i:32 * (i + 1), 32 * j:32 * (j + 1)]
            # the gradient encodes x % 256 and y % 256: recover the patch's position
            hits = [(y, x) for y in range(ys[i], ys[i + 1] - 31) for x in range(xs[j], xs[j + 1] - 31)
                    if patch[0, 0, 0] == x % 256 and patch[0, 0, 1] == y % 256
                    and np.array_equal(patch, rgb[y:y + 32, x:x + 32])]
            assert hits, f"fragment ({i},{j}) is not a native patch of frame cell ({i},{j})"


def test_fragment_cells_are_the_region_map_cells():
    """Map cell (i, j) covers the frame box the fragment of cell (i, j) came from."""
    h, w = 1080, 1920
    view = InputView("fragments")
    h2, w2 = view.working_shape(h, w)
    ys, xs = cell_edges(h2, 7), cell_edges(w2, 7)
    rm = RegionMap(np.zeros((7, 7), np.float32), h, w)
    for i in range(7):
        for j in range(7):
            x0, y0, x1, y1 = rm.cell_box(i, j)
            # same cell in working-scale pixels, scaled back to the frame (within a pixel of rounding)
            assert abs(ys[i] * h / h2 - y0) <= h / h2 + 1 and abs(xs[j] * w / w2 - x0) <= w / w2 + 1
            assert abs(ys[i + 1] * h / h2 - y1) <= h / h2 + 1 and abs(xs[j + 1] * w / w2 - x1) <= w / w2 + 1


def test_resize_view_leaves_the_squeeze_to_preprocessing():
    rgb = _gradient(720, 1280)
    assert InputView("resize", size=384)(rgb) is rgb


@pytest.mark.parametrize("mode", ["fragments", "crops"])
def test_a_view_of_a_view_is_itself(mode):
    """The monitor's workers send the view; the engine applies it again: nothing may change."""
    view = InputView(mode)
    once = view(_gradient(1080, 1920), draw=5)
    assert once.shape == (view.side, view.side, 3)
    assert np.array_equal(view(once), once)
    assert np.array_equal(view(once, draw=9), once)


def test_centre_view_is_stable_and_draws_differ():
    view = InputView("fragments")
    rgb = _gradient(540, 960)
    assert np.array_equal(view(rgb), view(rgb))
    assert np.array_equal(view(rgb, draw=1), view(rgb, draw=1))
    assert not np.array_equal(view(rgb, draw=1), view(rgb, draw=2))


def test_worker_swscale_path_matches_the_numpy_path():
    """media.model_input (swscale resize) and the view on a numpy frame agree closely."""
    from monitor.media import model_input

    rgb = _gradient(1080, 1920)
    rgb[:] = np.clip(rgb.astype(int) // 4 + 64, 0, 255).astype(np.uint8)  # smooth enough to resize alike
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    view = InputView("fragments")
    a = model_input(frame, view).astype(int)
    b = view(rgb).astype(int)
    assert a.shape == b.shape == (224, 224, 3)
    assert np.median(np.abs(a - b)) <= 2


def test_larger_fragments_give_one_map_value_per_frame_cell():
    view = InputView("fragments", grid=4, patch=64)
    maps = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)  # stride-32 maps of a 256 input
    cells = view.cell_map(maps)
    assert cells.shape == (2, 4, 4)
    assert cells[0, 0, 0] == np.mean([0, 1, 8, 9]) and cells[1, 3, 3] == np.mean(maps[1, 6:, 6:])
    assert InputView("fragments").cell_map(maps[:, :7, :7]).shape == (2, 7, 7)  # already per cell


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown input mode"):
        InputView("tiles")


def test_weights_record_the_view_and_serving_uses_it(tmp_path):
    from engines.engine import QualityEngine
    from engines.models import create_model
    from engines.weights import save_weights

    model = create_model("glint", weights=None)
    model.input_view = InputView("fragments", grid=5, patch=32)
    path = save_weights(model, tmp_path / "g.pt")
    served = create_model("glint", weights=path)
    assert served.input_view == InputView("fragments", grid=5, patch=32)
    engine = QualityEngine("glint", backend="cpu", weights=path)
    assert engine.input_size == 160
    preds = engine.score([_gradient(720, 1280)], draws=3)
    assert preds[0].region_map.shape == (5, 5)  # one cell per fragment
    assert (preds[0].region_map.frame_height, preds[0].region_map.frame_width) == (720, 1280)
