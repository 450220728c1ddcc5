"""The synthetic distortion library: registry, contract (shape/dtype/determinism) and severity order."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import color, data
from skimage.metrics import structural_similarity
from skimage.transform import resize

from engines.train.distortions import DISTORTIONS, KADID_TYPES, LEVELS, VIDEO_TYPES, apply

NAMES = list(DISTORTIONS)


def _u8(a: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    if shape is not None:
        a = resize(a, shape, anti_aliasing=True) * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    # three scenes, three sizes (square, landscape, odd native 300x451)
    return {
        "astronaut": _u8(data.astronaut(), (384, 384)),
        "coffee": _u8(data.coffee(), (320, 480)),
        "chelsea": data.chelsea().copy(),
    }


# ---------------------------------------------------------------------------------- metrics

def _one_minus_ssim(ref: np.ndarray, out: np.ndarray) -> float:
    return 1.0 - structural_similarity(
        ref, out, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )


def _mae(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref.astype(np.float64) - out).mean())


def _delta_e(ref: np.ndarray, out: np.ndarray) -> float:
    d = color.rgb2lab(ref) - color.rgb2lab(out)
    return float(np.sqrt((d * d).sum(-1)).mean())


# Which full-reference error must grow with level.  Structural damage: 1 - SSIM (per RGB
# channel).  Global tone changes (brightness, contrast) are what SSIM is least sensitive to:
# mean absolute error is the amount that actually moves.  Colour changes: CIE76 colour
# difference, since they leave luma structure mostly alone.
METRIC = {name: _one_minus_ssim for name in NAMES}
for _n in ("brighten", "darken", "mean_shift", "contrast_change"):
    METRIC[_n] = _mae
for _n in ("color_diffusion", "color_shift", "color_saturation_1", "color_saturation_2", "white_noise_color"):
    METRIC[_n] = _delta_e


# ---------------------------------------------------------------------------------- registry

def test_registry_has_25_kadid_types_and_the_video_ones():
    assert len(KADID_TYPES) == 25
    assert set(VIDEO_TYPES) == {"h264", "hevc", "blocking", "banding", "interlace", "packet_loss",
                                "underexposure"}
    families = {d.family for d in DISTORTIONS.values()}
    assert families == {"blur", "color", "compression", "noise", "brightness", "spatial",
                        "sharpness_contrast", "video"}
    for name, d in DISTORTIONS.items():
        assert d.name == name and callable(d.fn)
        assert len(d.params) == len(LEVELS) == 5
    assert LEVELS == (1, 2, 3, 4, 5)


# ---------------------------------------------------------------------------------- contract

@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_odd_sizes(name):
    rng = np.random.default_rng(0)
    for shape in [(333, 517), (64, 48), (9, 13)]:
        img = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
        # smooth it so codecs and banding see some structure, not only noise
        img = _u8(resize(img, shape, anti_aliasing=True, order=1) * 255.0)
        before = img.copy()
        for level in (1, 3, 5):
            out = apply(name, img, level, np.random.default_rng(level))
            assert out.dtype == np.uint8
            assert out.shape == img.shape
            assert out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(img, before)  # input untouched


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_fixed_seed(name, images):
    img = images["coffee"]
    a = apply(name, img, 3, np.random.default_rng(1234))
    b = apply(name, img, 3, np.random.default_rng(1234))
    np.testing.assert_array_equal(a, b)
    # and the callable object form agrees with apply()
    c = DISTORTIONS[name](img, 3, np.random.default_rng(1234))
    np.testing.assert_array_equal(a, c)


def test_random_types_depend_on_the_seed(images):
    img = images["astronaut"]
    for name in ("white_noise", "impulse_noise", "jitter", "color_block", "packet_loss", "motion_blur"):
        a = apply(name, img, 3, np.random.default_rng(1))
        b = apply(name, img, 3, np.random.default_rng(2))
        assert not np.array_equal(a, b), name


def test_bad_inputs_are_refused(images):
    img = images["astronaut"]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        apply("jpeg", img, 0, rng)
    with pytest.raises(ValueError):
        apply("jpeg", img, 6, rng)
    with pytest.raises(ValueError):
        apply("jpeg", img.astype(np.float32), 1, rng)
    with pytest.raises(ValueError):
        apply("jpeg", img[..., 0], 1, rng)
    with pytest.raises(ValueError):
        apply("jpeg", img[:5, :5], 1, rng)
    with pytest.raises(KeyError):
        apply("no_such_thing", img, 1, rng)


# ---------------------------------------------------------------------------------- severity

@pytest.mark.parametrize("name", NAMES)
def test_severity_grows_with_level(name, images):
    """For every type, on every image and two seeds, the FR error rises strictly level by level."""
    metric = METRIC[name]
    probe = images["coffee"]
    uses_rng = not np.array_equal(
        apply(name, probe, 3, np.random.default_rng(0)), apply(name, probe, 3, np.random.default_rng(1))
    )
    for key, img in images.items():
        for seed in (0, 1) if uses_rng else (0,):
            errs = [metric(img, apply(name, img, lv, np.random.default_rng(seed))) for lv in LEVELS]
            assert errs[0] > 0.0, f"{name} level 1 leaves {key} unchanged"
            steps = np.diff(errs)
            assert np.all(steps > 0), f"{name} on {key} (seed {seed}): {np.round(errs, 4)}"


@pytest.mark.parametrize("name", ["mean_shift", "contrast_change"])
def test_direction_choosing_types_are_monotone_both_ways(name, images):
    """mean_shift and contrast_change draw a direction; both directions must order by level."""
    img = images["astronaut"]
    seen = set()
    for seed in range(12):
        outs = [apply(name, img, lv, np.random.default_rng(seed)) for lv in LEVELS]
        up = outs[-1].astype(np.float64).std() > img.std() if name == "contrast_change" else outs[-1].mean() > img.mean()
        seen.add(bool(up))
        errs = [_mae(img, o) for o in outs]
        assert np.all(np.diff(errs) > 0), (seed, errs)
    assert seen == {True, False}


def test_levels_share_random_draws(images):
    """Level k+1 is 'more of' level k: impulse-noise hits are nested, patches accumulate."""
    img = images["coffee"]
    hit = [np.any(apply("impulse_noise", img, lv, np.random.default_rng(7)) != img, axis=2) for lv in LEVELS]
    for a, b in zip(hit, hit[1:]):
        assert np.all(b[a]), "impulse hits of a level must remain hit at the next level"
    changed = [np.any(apply("color_block", img, lv, np.random.default_rng(7)) != img, axis=2) for lv in LEVELS]
    for a, b in zip(changed, changed[1:]):
        assert b.sum() > a.sum()


def test_video_codecs_are_real_encoders(images):
    """h264/hevc go through libx264/libx265: 8x8/4x4-transform damage, not an emulation."""
    import av

    assert "libx264" in av.codecs_available and "libx265" in av.codecs_available
    img = images["astronaut"]
    for name in ("h264", "hevc"):
        out = apply(name, img, 5, np.random.default_rng(0))
        assert _one_minus_ssim(img, out) > 0.15


def test_jpeg2000_is_real_jpeg2000():
    from PIL import features

    assert features.check("jpg_2000"), "Pillow was built without OpenJPEG"
