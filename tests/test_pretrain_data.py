"""Pre-training data: full-reference pseudo-labels, the set builder, ranking pairs, pristine loaders."""
from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity
from skimage.transform import resize

from engines.train import pristine
from engines.train.distortions import DISTORTIONS, LEVELS, apply
from engines.train.pseudolabels import (
    FRScores,
    build_pretrain_set,
    delta_e,
    fr_scores,
    gmsd,
    ms_ssim,
    pseudo_mos,
    ranking_pairs,
    sample_ranking_pair,
    ssim,
)


def _u8(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.clip(np.rint(resize(a, shape, anti_aliasing=True) * 255.0), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return _u8(data.astronaut(), (256, 256))


@pytest.fixture(scope="module")
def small_set() -> list[tuple[str, np.ndarray]]:
    return [("astro", _u8(data.astronaut(), (192, 192))), ("coffee", _u8(data.coffee(), (160, 224)))]


# ---------------------------------------------------------------------------------- FR scores

def test_identical_images_score_perfect(astronaut):
    assert ssim(astronaut, astronaut) == pytest.approx(1.0)
    assert ms_ssim(astronaut, astronaut) == pytest.approx(1.0)
    assert gmsd(astronaut, astronaut) == pytest.approx(0.0, abs=1e-12)
    assert delta_e(astronaut, astronaut) == pytest.approx(0.0, abs=1e-9)
    sc = fr_scores(astronaut, astronaut)
    assert sc.pseudo_mos == pytest.approx(100.0)
    assert pseudo_mos(FRScores(1.0, 1.0, 0.0, 0.0)) == 100.0


def test_ssim_matches_scikit_image_and_the_shared_pass(astronaut):
    out = apply("jpeg", astronaut, 3, np.random.default_rng(0))
    f = astronaut.astype(np.float64)
    g = out.astype(np.float64)
    y1 = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    y2 = 0.299 * g[..., 0] + 0.587 * g[..., 1] + 0.114 * g[..., 2]
    ref = structural_similarity(y1, y2, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim(astronaut, out) == pytest.approx(ref, abs=1e-12)
    # fr_scores computes SSIM itself (scale 1 of MS-SSIM): must be the same number
    assert fr_scores(astronaut, out).ssim == pytest.approx(ref, abs=1e-9)
    assert fr_scores(astronaut, out).ms_ssim == pytest.approx(ms_ssim(astronaut, out), abs=1e-12)
    assert fr_scores(astronaut, out).gmsd == pytest.approx(gmsd(astronaut, out), abs=1e-12)


@pytest.mark.parametrize("name", ["gaussian_blur", "white_noise", "jpeg", "h264"])
def test_fr_scores_track_severity(name, astronaut):
    scores = [fr_scores(astronaut, apply(name, astronaut, lv, np.random.default_rng(3))) for lv in LEVELS]
    s = [x.ssim for x in scores]
    m = [x.ms_ssim for x in scores]
    g = [x.gmsd for x in scores]
    assert all(v < 1.0 for v in s + m)
    assert np.all(np.diff(s) < 0), s
    assert np.all(np.diff(m) < 0), m
    assert np.all(np.diff(g) > 0), g


@pytest.mark.parametrize(
    "name", ["gaussian_blur", "jpeg2000", "white_noise", "color_saturation_1", "brighten", "contrast_change",
             "pixelate", "hevc", "packet_loss"]
)
def test_pseudo_mos_is_monotone_in_level(name, astronaut):
    mos = [fr_scores(astronaut, apply(name, astronaut, lv, np.random.default_rng(5))).pseudo_mos for lv in LEVELS]
    assert 0.0 <= min(mos) and max(mos) < 100.0
    assert np.all(np.diff(mos) < 0), mos


def test_colour_and_brightness_loss_lower_the_pseudo_mos(astronaut):
    """The luma-only scores barely see desaturation; the colour term must."""
    grey = apply("color_saturation_1", astronaut, 5, np.random.default_rng(0))
    sc = fr_scores(astronaut, grey)
    assert sc.ssim > 0.9  # structure intact
    assert sc.pseudo_mos < 75.0


def test_ms_ssim_handles_small_images():
    rng = np.random.default_rng(0)
    a = _u8(data.chelsea(), (40, 60))
    b = apply("white_noise", a, 3, rng)
    v = ms_ssim(a, b)
    assert 0.0 < v < 1.0
    with pytest.raises(ValueError):
        ms_ssim(a[:8, :8], b[:8, :8])
    with pytest.raises(ValueError):
        ms_ssim(a, b[:-1])


# ---------------------------------------------------------------------------------- builder

def test_builder_counts_and_fields(small_set):
    types = ["gaussian_blur", "white_noise", "jpeg"]
    recs = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(0)))
    assert len(recs) == len(small_set) * len(types) * len(LEVELS)
    keys = {(r.image_id, r.distortion, r.level) for r in recs}
    assert len(keys) == len(recs)
    shapes = dict(small_set)
    for r in recs:
        assert r.distorted.dtype == np.uint8 and r.distorted.shape == shapes[r.image_id].shape
        assert 0.0 <= r.pseudo_mos <= 100.0
        assert r.pseudo_mos == pytest.approx(r.scores.pseudo_mos)
        assert r.family == DISTORTIONS[r.distortion].family
    # all levels of one (image, type) come from the same seed
    seeds = {}
    for r in recs:
        seeds.setdefault((r.image_id, r.distortion), set()).add(r.seed)
    assert all(len(s) == 1 for s in seeds.values())

    with_ref = list(build_pretrain_set(small_set, types, (1, 5), np.random.default_rng(0), include_reference=True))
    assert len(with_ref) == len(small_set) * (1 + len(types) * 2)
    refs = [r for r in with_ref if r.level == 0]
    assert len(refs) == 2 and all(r.pseudo_mos == 100.0 and r.distortion == "reference" for r in refs)


def test_builder_accepts_arrays_and_dicts(small_set):
    arrays = [a for _, a in small_set]
    recs = list(build_pretrain_set(arrays, ["jpeg"], (2,), np.random.default_rng(0)))
    assert [r.image_id for r in recs] == ["img00000", "img00001"]
    recs = list(build_pretrain_set(dict(small_set), ["jpeg"], (2,), np.random.default_rng(0)))
    assert [r.image_id for r in recs] == ["astro", "coffee"]
    with pytest.raises(KeyError):
        list(build_pretrain_set(small_set, ["nope"], (1,), np.random.default_rng(0)))
    with pytest.raises(ValueError):
        list(build_pretrain_set(small_set, ["jpeg"], (0,), np.random.default_rng(0)))


def test_builder_is_deterministic_under_a_seed(small_set):
    types = ["white_noise", "motion_blur", "packet_loss"]
    a = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(42)))
    b = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(42)))
    c = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(43)))
    for x, y in zip(a, b):
        assert (x.image_id, x.distortion, x.level, x.seed) == (y.image_id, y.distortion, y.level, y.seed)
        np.testing.assert_array_equal(x.distorted, y.distorted)
        assert x.pseudo_mos == y.pseudo_mos
    assert any(not np.array_equal(x.distorted, z.distorted) for x, z in zip(a, c))


def test_builder_pseudo_mos_decreases_with_level(small_set):
    recs = list(build_pretrain_set(small_set, ["gaussian_blur", "jpeg", "impulse_noise", "darken"], LEVELS,
                                   np.random.default_rng(1)))
    by = {}
    for r in recs:
        by.setdefault((r.image_id, r.distortion), []).append((r.level, r.pseudo_mos))
    for key, vals in by.items():
        mos = [m for _, m in sorted(vals)]
        assert np.all(np.diff(mos) < 0), (key, mos)


# ---------------------------------------------------------------------------------- ranking

def test_ranking_pairs(small_set):
    types = ["gaussian_blur", "jpeg"]
    recs = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(0)))
    pairs = ranking_pairs(recs)
    assert len(pairs) == len(small_set) * len(types) * 10  # C(5, 2)
    for better, worse in pairs:
        assert better.image_id == worse.image_id and better.distortion == worse.distortion
        assert better.level < worse.level
        assert better.pseudo_mos > worse.pseudo_mos
    assert len(ranking_pairs(recs, min_gap=2)) == len(small_set) * len(types) * 6
    recs_ref = list(build_pretrain_set(small_set, types, LEVELS, np.random.default_rng(0), include_reference=True))
    pairs_ref = ranking_pairs(recs_ref)
    assert len(pairs_ref) == len(small_set) * len(types) * 15  # C(6, 2): the reference joins each type
    assert sum(1 for b, _ in pairs_ref if b.level == 0) == len(small_set) * len(types) * 5


def test_sample_ranking_pair(astronaut):
    rng = np.random.default_rng(0)
    seen_ref = False
    for _ in range(12):
        p = sample_ranking_pair(astronaut, rng, ["gaussian_blur", "white_noise", "jpeg", "color_block"])
        assert 0 <= p.better_level < p.worse_level <= 5
        assert p.better.shape == p.worse.shape == astronaut.shape
        seen_ref |= p.better_level == 0
        if p.better_level == 0:
            np.testing.assert_array_equal(p.better, astronaut)
        assert fr_scores(astronaut, p.better).pseudo_mos > fr_scores(astronaut, p.worse).pseudo_mos
    assert seen_ref
    a = sample_ranking_pair(astronaut, np.random.default_rng(9), allow_reference=False, min_gap=2)
    b = sample_ranking_pair(astronaut, np.random.default_rng(9), allow_reference=False, min_gap=2)
    assert a.better_level >= 1 and a.worse_level - a.better_level >= 2
    assert (a.distortion, a.better_level, a.worse_level) == (b.distortion, b.better_level, b.worse_level)
    np.testing.assert_array_equal(a.worse, b.worse)


# ---------------------------------------------------------------------------------- pristine

def test_package_images():
    items = pristine.package_images()
    ids = [i for i, _ in items]
    assert {"skimage:astronaut", "skimage:chelsea", "skimage:coffee"} <= set(ids)
    for _, a in items:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert not any(i.startswith("sklearn:") for i in ids)


def test_directory_images(tmp_path: Path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(rgb[..., 0]).save(sub / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)])).save(tmp_path / "a" / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "a" / "deep16.png")
    Image.fromarray(rgb).save(tmp_path / "y.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    items = list(pristine.directory_images(tmp_path))
    ids = [i for i, _ in items]
    assert ids == ["a/b/grey.png", "a/deep16.png", "a/rgba.png", "x.png", "y.jpg"]
    got = dict(items)
    np.testing.assert_array_equal(got["x.png"], rgb)
    np.testing.assert_array_equal(got["a/rgba.png"], rgb)
    np.testing.assert_array_equal(got["a/b/grey.png"], np.repeat(rgb[..., :1], 3, axis=2))
    np.testing.assert_array_equal(got["a/deep16.png"], np.repeat(rgb[..., :1], 3, axis=2))
    for a in got.values():
        assert a.dtype == np.uint8 and a.shape == (20, 30, 3)
    assert [i for i, _ in pristine.directory_images(tmp_path, recursive=False)] == ["x.png", "y.jpg"]
    with pytest.raises(FileNotFoundError):
        list(pristine.directory_images(tmp_path / "missing"))


def _write_clip(path: Path, n: int = 30, size: tuple[int, int] = (96, 64), fmt: str | None = None) -> None:
    w, h = size
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "ultrafast", "g": "8"}
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (i * 8) % 256  # red level encodes the frame index
            img[:, : (i % w), 1] = 200
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_video_frames(tmp_path: Path, container: str):
    clip = tmp_path / f"clip.{container}"
    _write_clip(clip)
    frames = list(pristine.video_frames(clip, 5))
    assert len(frames) == 5
    reds = [int(np.median(a[..., 0])) for _, a in frames]
    assert reds == sorted(reds) and len(set(reds)) == 5  # distinct frames, in time order
    assert reds[0] < 8 * 8 and reds[-1] > 8 * 22
    for fid, a in frames:
        assert fid.startswith("clip@") and fid.endswith("s")
        assert a.dtype == np.uint8 and a.shape == (64, 96, 3)
    small = list(pristine.video_frames(clip, 2, max_side=48))
    assert all(a.shape == (32, 48, 3) for _, a in small)
    # asking for more frames than the clip has gives each frame at most once
    many = list(pristine.video_frames(clip, 100))
    assert 1 <= len(many) <= 30 and len({i for i, _ in many}) == len(many)


def test_video_frames_without_duration(tmp_path: Path):
    clip = tmp_path / "raw.h264"  # elementary stream: the container knows no duration
    _write_clip(clip, n=20, fmt="h264")
    frames = list(pristine.video_frames(clip, 4))
    reds = [int(np.median(a[..., 0])) for _, a in frames]
    assert len(frames) == 4 and reds == sorted(reds) and len(set(reds)) == 4


def test_livec_top_images(tmp_path: Path):
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    mos = {"a.png": 30.0, "b.png": 80.5, "c.JPG": 65.0, "d.png": 80.5}
    for i, name in enumerate(mos):
        Image.fromarray(np.full((12, 10, 3), i * 40, np.uint8)).save(imgdir / name, format="PNG")
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos", "mos_std", "original_name"])
        for name, m in mos.items():
            w.writerow([name, m, 1.0, name])
    top = pristine.livec_top_images(imgdir, labels, top_k=3)
    assert [i for i, _ in top] == ["livec:b.png", "livec:d.png", "livec:c.JPG"]
    assert [i for i, _ in pristine.livec_top_images(imgdir, mos, min_mos=60)] == [
        "livec:b.png", "livec:d.png", "livec:c.JPG"]
    assert pristine.read_mos_labels(labels) == mos


def test_fit_and_crops():
    img = _u8(data.coffee(), (120, 200))
    for mode in ("resize", "center_crop"):
        out = pristine.fit(img, 64, mode)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    a = pristine.fit(img, 64, "random_crop", np.random.default_rng(1))
    b = pristine.fit(img, 64, "random_crop", np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    # native-resolution crop: the window exists in the source
    found = any(
        np.array_equal(img[y : y + 64, x : x + 64], a) for y in range(120 - 63) for x in range(200 - 63)
    )
    assert found
    tiny = pristine.fit(img[:20, :30], 64, "random_crop", np.random.default_rng(0))
    assert tiny.shape == (64, 64, 3)
    with pytest.raises(ValueError):
        pristine.fit(img, 64, "random_crop")
    with pytest.raises(ValueError):
        pristine.fit(img, 64, "stretch")
    crops = list(pristine.pristine_crops([("c", img), ("d", img)], 48, "random_crop", np.random.default_rng(0),
                                         per_image=3))
    assert [i for i, _ in crops] == ["c#0", "c#1", "c#2", "d#0", "d#1", "d#2"]
    assert all(x.shape == (48, 48, 3) for _, x in crops)


def test_pristine_to_pretrain_end_to_end():
    src = pristine.pristine_crops(pristine.package_images()[:2], 128, "resize")
    recs = list(build_pretrain_set(src, ["jpeg", "banding"], (1, 5), np.random.default_rng(0)))
    assert len(recs) == 2 * 2 * 2
    assert all(r.distorted.shape == (128, 128, 3) for r in recs)
