"""Resolution-aware measures of monitor/picture_measures.py: the same damage reads the same
whatever the source size (issue 16)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from monitor.detectors import FrameDetectors
from monitor.picture_measures import edge_width, noise_native, white_level


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Flat patches with hard edges (0..1), the same layout at every size."""
    rng = np.random.default_rng(seed)
    cells = rng.uniform(0.15, 0.85, (9, 16))
    return np.kron(cells, np.ones((h // 9 + 1, w // 16 + 1)))[:h, :w].astype(np.float32)


@pytest.mark.parametrize("sigma", [5.0, 10.0, 20.0])
def test_noise_reads_the_same_at_every_resolution(sigma):
    rng = np.random.default_rng(1)
    reads = []
    for h, w in ((360, 640), (720, 1280), (1080, 1920)):
        y8 = np.clip(_scene(h, w) * 255 + rng.normal(0, sigma, (h, w)), 0, 255).astype(np.uint8)
        reads.append(noise_native(y8))
    assert reads == pytest.approx([sigma] * 3, rel=0.15), reads
    assert noise_native((_scene(720, 1280) * 255).astype(np.uint8)) < 0.5  # clean


def test_noise_is_not_read_where_video_black_clips_it():
    """A 4:3 picture pillarboxed in 16:9 with noise added in RGB: in the bars the noise is
    clipped at RGB 0, which lands on limited-range black (16), and must not be taken for the
    flattest, least noisy part of the picture (chaplin with sigma 20 read 7 before)."""
    rng = np.random.default_rng(3)
    h, w, bar = 720, 1280, 160
    rgb_level = np.zeros((h, w), np.float32)
    rgb_level[:, bar:w - bar] = _scene(h, w - 2 * bar) * 255
    noisy = np.clip(rgb_level + rng.normal(0, 20, (h, w)), 0, 255)
    y8 = np.round(16 + noisy * 219 / 255).astype(np.uint8)  # limited range, as a decoder gives
    assert noise_native(y8) == pytest.approx(20 * 219 / 255, rel=0.15)
    # a picture that is nearly all video black still reads its noise from the hard limits
    dark = np.round(16 + np.clip(rng.normal(6, 6, (h, w)), 0, 255) * 219 / 255).astype(np.uint8)
    assert noise_native(dark) == noise_native(dark) > 0  # not nan


def test_detectors_measure_noise_on_the_native_plane():
    """720p noise read through the worker's path (a 640-wide frame plus the native luma plane)
    matches the noise put in; the 640-wide frame alone would read about half of it."""
    rng = np.random.default_rng(2)
    y = np.clip(_scene(720, 1280) * 255 + rng.normal(0, 12, (720, 1280)), 0, 255)
    native = y.astype(np.uint8)
    small = y.reshape(360, 2, 640, 2).mean(axis=(1, 3))
    frame = np.repeat(small[..., None], 3, axis=2).astype(np.uint8)
    v = FrameDetectors().update(frame, 0.0, 0.0, source_size=(1280, 720), luma_native=native)
    assert v["noise_native"] == pytest.approx(12.0, rel=0.15)
    # without the native plane: the frame's estimate corrected by the downscale factor
    v = FrameDetectors().update(frame, 0.0, 0.0, source_size=(1280, 720))
    assert v["noise_native"] == pytest.approx(12.0, rel=0.25)


def test_edge_width_grows_with_blur_and_ignores_the_frame_size():
    y = _scene(360, 640)
    sharp = edge_width(y)
    widths = [edge_width(ndimage.gaussian_filter(y, s)) for s in (1.0, 2.0, 4.0)]
    assert sharp < 2.5 and sharp < widths[0] < widths[1] < widths[2]
    assert widths[2] > 5.0
    # a 1280-wide frame of the same scene is measured at 640 wide
    big = _scene(720, 1280)
    assert edge_width(ndimage.gaussian_filter(big, 8.0)) == pytest.approx(widths[2], rel=0.2)
    assert np.isnan(edge_width(np.full((360, 640), 0.5, np.float32)))  # flat: no data


def test_white_level_follows_exposure_and_keeps_a_night_scenes_lights():
    y = _scene(360, 640)
    assert white_level(y * 0.2) <= 0.2
    night = np.full((360, 640), 0.04, np.float32)
    for x in range(0, 640, 40):  # a row of street lights, 6 x 6 px each: 0.25 % of the picture
        night[100:106, x:x + 6] = 1.0
    assert white_level(night) > 0.9


def test_blockiness_ignores_a_graphics_edges_on_the_grid():
    """A flat lower-third bar and panels whose edges sit on multiples of 8 (as designers place
    them) are not blocking; real 8x8 blocks on every grid line still are."""
    from monitor.detectors import blockiness
    y = np.tile(np.linspace(40, 120, 720)[:, None], (1, 1280))
    y[576:648] = 235.0                       # lower third, both edges on the 8-px grid
    y[96:240, 160:480] = 30.0                # a panel, its four edges on the grid
    y += np.random.default_rng(3).normal(0, 1.0, y.shape)  # a little texture
    assert blockiness(y.astype(np.int16)) < 1.5
    blocks = np.kron(np.random.default_rng(4).uniform(30, 220, (90, 160)), np.ones((8, 8)))
    blocks += np.random.default_rng(5).normal(0, 2.0, blocks.shape)
    assert blockiness(blocks.astype(np.int16)) > 3.0


def test_pixelation_is_blocky_and_a_flat_graphics_edge_is_no_macroblock_break():
    from monitor.detectors import BLOCKINESS_FLAT_BLOCKS, blockiness, macroblock_edge_breaks
    rng = np.random.default_rng(6)
    pixelated = np.kron(rng.uniform(30, 220, (17, 40)), np.ones((16, 16)))  # 640x272, 16 px blocks
    assert blockiness(pixelated.astype(np.int16)) == BLOCKINESS_FLAT_BLOCKS
    assert np.isnan(blockiness(np.full((272, 640), 90, np.int16)))  # flat: nothing to judge
    fade = np.kron(rng.integers(16, 18, (17, 40)), np.ones((16, 16)))  # near black, faint steps
    assert np.isnan(blockiness(fade.astype(np.int16)))  # a fade from black, not pixelation
    graphic = np.full((720, 1280), 60.0)
    graphic[576:648] = 235.0                  # a lower third on the macroblock grid
    graphic[96:240, 160:480] = 30.0
    before = macroblock_edge_breaks(graphic.astype(np.uint8))
    after = macroblock_edge_breaks(graphic.astype(np.uint8), min_texture=0.5)
    assert before > 0.004 and after < 0.001  # (only the panel's corners are left)
    # a concealed (flat) macroblock in a textured picture is still a break
    texture = np.clip(128 + rng.normal(0, 12, (720, 1280)), 0, 255)
    texture[320:336, 640:656] = 20.0
    assert macroblock_edge_breaks(texture.astype(np.uint8), min_texture=0.5) > 0.0
