"""BRISQUE, NIQE and frozen-Lite0 ridge baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats
from skimage import data

from engines.baselines import BASELINES, create_baseline, list_baselines
from engines.registry import resolve
from engines.baselines.brisque import N_FEATURES, KernelRidgeRBF, aggd_fit, brisque_features, ggd_fit, mscn
from engines.baselines.frozen_ridge import N_FEATURES as RIDGE_FEATURES
from engines.baselines.frozen_ridge import RidgeLOO, pool_features
from engines.baselines.niqe import (
    DEFAULT_MODEL_PATH,
    PristineModel,
    fit_pristine_model,
    niqe_score,
    patch_features,
)

CONTENT = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def _rgb(name: str) -> np.ndarray:
    img = getattr(data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return img
    return np.clip(ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def _noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def test_registry():
    assert list_baselines() == sorted(BASELINES)
    assert [resolve(BASELINES[name]).name for name in BASELINES] == list(BASELINES)
    with pytest.raises(KeyError):
        create_baseline("piqe")


# ----------------------------------------------------------------------------- NSS fits

@pytest.mark.parametrize("alpha", [0.6, 1.0, 2.0, 3.5])
def test_ggd_fit_recovers_shape(alpha):
    x = stats.gennorm.rvs(alpha, scale=0.7, size=200_000, random_state=1)
    a, var = ggd_fit(x)
    assert a == pytest.approx(alpha, rel=0.05)
    assert var == pytest.approx(np.mean(x * x))


def test_ggd_fit_vectorised_and_degenerate():
    x = stats.gennorm.rvs(1.5, size=(3, 50_000), random_state=2)
    a, _ = ggd_fit(x)
    assert a.shape == (3,) and np.allclose(a, 1.5, rtol=0.08)
    a0, v0 = ggd_fit(np.zeros(100))
    assert np.isfinite(a0) and v0 == 0


def test_aggd_fit_gaussian_and_skew():
    rng = np.random.default_rng(3)
    g = rng.normal(0, 1, 200_000)
    alpha, eta, lv, rv = aggd_fit(g)
    assert alpha == pytest.approx(2.0, rel=0.05)
    assert abs(eta) < 0.02 and lv == pytest.approx(1.0, rel=0.02) and rv == pytest.approx(1.0, rel=0.02)
    # wider right side: positive mean, larger right variance
    skew = np.where(g > 0, 2 * g, g)
    alpha, eta, lv, rv = aggd_fit(skew)
    assert eta > 0.3 and rv == pytest.approx(4 * lv, rel=0.05)
    assert all(np.isfinite(aggd_fit(np.abs(g))))  # one-sided sample


def test_mscn_is_normalised():
    m = mscn(np.asarray(data.camera(), np.float64))
    assert abs(m.mean()) < 0.1 and 0.2 < m.std() < 1.5


# ----------------------------------------------------------------------------- BRISQUE

def test_brisque_features_shape_and_finite():
    for img in (_rgb("astronaut"), data.camera(), np.full((64, 80, 3), 128, np.uint8),
                np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)):
        f = brisque_features(img)
        assert f.shape == (N_FEATURES,) == (36,)
        assert np.all(np.isfinite(f))
    with pytest.raises(ValueError):
        brisque_features(np.zeros((10, 10, 3), np.uint8))


def test_brisque_features_react_to_distortion():
    img = _rgb("astronaut")
    clean, blurred, noisy = (brisque_features(x) for x in (img, _blur(img, 3), _noise(img, 25)))
    # blur: MSCN coefficients shrink and get heavier tails (lower GGD shape and variance);
    # white noise: they spread and lose their peak (higher shape and variance)
    assert blurred[0] < clean[0] and blurred[1] < 0.5 * clean[1]
    assert noisy[0] > clean[0] + 0.5 and noisy[1] > 2 * clean[1]


def _distortion_set(names):
    feats, labels, groups = [], [], []
    for name in names:
        img = _rgb(name)
        for level in range(4):
            for kind, fn in (("blur", lambda x, lv: _blur(x, [0, 1, 2.5, 5][lv])),
                             ("noise", lambda x, lv: _noise(x, [0, 8, 20, 40][lv]))):
                feats.append(brisque_features(fn(img, level)))
                labels.append(90.0 - 25.0 * level)
                groups.append((name, kind))
    return np.array(feats), np.array(labels), groups


def test_brisque_ranks_distortion_levels_on_unseen_content():
    """Fit the regressor on distorted versions of 4 images; rank the levels of 2 other photos."""
    x_tr, y_tr, _ = _distortion_set(("astronaut", "coffee", "immunohistochemistry", "rocket"))
    x_te, y_te, groups = _distortion_set(("chelsea", "camera"))
    pred = create_baseline("brisque").fit(x_tr, y_tr).predict(x_te)
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        assert np.all(np.diff(pred[idx]) < 0), (g, pred[idx])  # stronger distortion, lower quality
    assert stats.spearmanr(pred, y_te).statistic > 0.8


def test_kernel_ridge_loo_matches_brute_force():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 5))
    y = np.sin(x[:, 0]) * 10 + x[:, 1] + rng.normal(0, 0.1, 30)
    model = KernelRidgeRBF(gammas=(0.5,), lambdas=(0.1,)).fit(x, y)
    # closed-form LOO error equals refitting without each sample (same z-scoring as the fit)
    z = (x - model.mean_) / model.scale_
    errs = []
    for i in range(30):
        keep = np.arange(30) != i
        k = model._kernel(z[keep], z[keep], model.gamma_)
        # kernel ridge with an unpenalised intercept, solved from its normal equations
        ones = np.ones((29, 1))
        lhs = np.block([[k @ k + 0.1 * k, k @ ones], [ones.T @ k, np.array([[29.0]])]])
        sol = np.linalg.lstsq(lhs, np.r_[k @ y[keep], y[keep].sum()], rcond=None)[0]
        errs.append((model._kernel(z[i:i + 1], z[keep], model.gamma_) @ sol[:-1] + sol[-1] - y[i])[0])
    assert model.loo_mse_ == pytest.approx(np.mean(np.square(errs)), rel=1e-6)
    assert np.corrcoef(model.predict(x), y)[0, 1] > 0.95


# ----------------------------------------------------------------------------- NIQE

def test_shipped_pristine_model():
    m = PristineModel.load(DEFAULT_MODEL_PATH)
    assert m.mu.shape == (36,) and m.cov.shape == (36, 36) and m.patch_size == 96
    assert np.allclose(m.cov, m.cov.T) and np.linalg.eigvalsh(m.cov).min() > -1e-9
    assert m.meta["n_images"] >= 200 and m.meta["n_patches"] > 36
    with pytest.raises(FileNotFoundError, match="fit-pristine"):
        PristineModel.load("/nonexistent/niqe.npz")


def test_niqe_patch_features():
    feats, sharp = patch_features(_rgb("astronaut"))
    assert feats.shape == (25, 36) and sharp.shape == (25,)
    assert np.all(np.isfinite(feats)) and np.all(sharp >= 0)
    with pytest.raises(ValueError, match="smaller"):
        patch_features(np.zeros((64, 200, 3), np.uint8))


@pytest.mark.parametrize("distort, levels", [(_blur, [0, 1, 2, 4]), (_noise, [0, 6, 15, 35])])
def test_niqe_ranks_distortion_levels(distort, levels):
    model = PristineModel.load()
    for name in CONTENT[:4]:
        img = _rgb(name)
        scores = [niqe_score(distort(img, lv), model) for lv in levels]
        assert np.all(np.diff(scores) > 0), (name, scores)  # stronger distortion, higher NIQE


def test_fit_pristine_model_small():
    imgs = [_rgb(n) for n in CONTENT]
    m = fit_pristine_model(imgs, patch_size=48, meta={"source": "skimage"})
    assert m.mu.shape == (36,) and m.patch_size == 48
    assert m.meta["n_images"] == 6 and m.meta["source"] == "skimage"
    clean = niqe_score(imgs[0], m)
    assert niqe_score(_blur(imgs[0], 3), m) > clean


def test_niqe_baseline_mapping(tmp_path):
    b = create_baseline("niqe")
    niqe = np.array([[3.0], [5.0], [8.0], [12.0], [15.0], [20.0]])
    mos = np.array([80, 70, 55, 40, 30, 25.0])
    np.testing.assert_allclose(b.predict(niqe), -niqe[:, 0])  # unfitted: quality = -NIQE
    pred = b.fit(niqe, mos).predict(niqe)
    assert stats.spearmanr(pred, mos).statistic == pytest.approx(1.0)
    assert np.abs(pred - mos).max() < 6


# ----------------------------------------------------------------------------- frozen ridge

def test_ridge_loo_matches_brute_force_and_recovers_line():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 8))
    y = x @ np.arange(1, 9) + 3 + rng.normal(0, 0.5, 40)
    model = RidgeLOO(alphas=(0.01, 1.0, 10.0, 1000.0)).fit(x, y)
    assert model.alpha_ < 1000
    assert np.corrcoef(model.predict(x), y)[0, 1] > 0.99
    # closed-form LOO vs refitting with the z-scoring of the full fit, at alpha 10
    a = 10.0
    z = (x - model.mean_) / model.scale_
    errs = []
    for i in range(40):
        keep = np.arange(40) != i
        zk = np.c_[z[keep], np.ones(39)]
        pen = a * np.eye(9)
        pen[-1, -1] = 0  # no penalty on the intercept
        w = np.linalg.solve(zk.T @ zk + pen, zk.T @ y[keep])
        errs.append(np.r_[z[i], 1.0] @ w - y[i])
    assert model.loo_mse_path_[2] == pytest.approx(np.mean(np.square(errs)), rel=1e-6)


def test_pool_features():
    feats = {name: torch.arange(2 * c * 4, dtype=torch.float32).reshape(2, c, 2, 2)
             for name, c in (("s4", 24), ("s8", 40), ("s16", 112), ("s32", 320), ("head", 1280))}
    pooled = pool_features(feats)
    assert pooled.shape == (2, RIDGE_FEATURES) == (2, 3552)
    assert pooled[0, 0] == pytest.approx(1.5)  # mean of 0,1,2,3
    assert pooled[0, 24] == pytest.approx(np.std([0, 1, 2, 3]))


def test_frozen_ridge_features():
    b = create_baseline("frozen-ridge")
    f = b.features_batch([_rgb("coffee"), data.camera()])
    assert f.shape == (2, 3552) and np.all(np.isfinite(f))
    start = 0
    for c in (24, 40, 112, 320, 1280):  # per depth: c means then c stds
        stds = f[:, start + c:start + 2 * c]
        assert np.all(stds >= 0) and np.all(stds.max(axis=1) > 0)
        start += 2 * c
    assert start == 3552


def test_frozen_ridge_native_reads_each_image_at_its_own_size():
    native, resized = create_baseline("frozen-ridge-native"), create_baseline("frozen-ridge")
    images = [_rgb("coffee"), data.camera()]  # 400x600 and 512x512: no common size
    f = native.features_batch(images)
    assert f.shape == (2, 3552) and np.all(np.isfinite(f))
    # one image at a time gives the same features: nothing was resized to share a batch
    np.testing.assert_allclose(native.features_batch(images[:1])[0], f[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(f, resized.features_batch(images), atol=1e-3)


def test_lite0_finetune_predicts_each_folds_test_images(tmp_path):
    from engines.baselines import finetuned

    rng = np.random.default_rng(0)
    paths, mos = [], []
    for i in range(12):  # brighter is better: learnable in a step or two
        level = 40 + 15 * (i % 12)
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.clip(rng.normal(level, 20, (240, 240, 3)), 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
        mos.append(level / 2.55)
    splits = [(np.arange(0, 8), np.arange(8, 12)), (np.arange(4, 12), np.arange(0, 4))]
    preds = finetuned.cross_validate(paths, np.array(mos), splits, draws=2, epochs=1, progress=False)
    assert [p.shape for p in preds] == [(4,), (4,)]
    assert all(np.all(np.isfinite(p)) and np.ptp(p) > 0 for p in preds)


# ----------------------------------------------------------------------------- feature cache

def test_feature_cache(tmp_path, monkeypatch):
    paths = []
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        p = tmp_path / f"{i}.png"
        Image.fromarray(_rgb(name)).save(p)
        paths.append(p)
    b = create_baseline("brisque")
    cache = tmp_path / "cache"
    first = b.extract_paths(paths, cache_dir=cache, progress=False)
    assert first.shape == (3, 36) and len(list(cache.glob("brisque-*.npz"))) == 1

    def boom(images):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(b, "features_batch", boom)
    np.testing.assert_array_equal(b.extract_paths(paths, cache_dir=cache, progress=False), first)
    # a different image list is a different key
    with pytest.raises(AssertionError, match="recomputed"):
        b.extract_paths(paths[:2], cache_dir=cache, progress=False)
    monkeypatch.undo()
    # a changed file is a different key too
    Image.fromarray(_blur(_rgb("astronaut"), 3)).save(paths[0])
    changed = b.extract_paths(paths, cache_dir=cache, progress=False)
    assert not np.allclose(changed[0], first[0]) and np.allclose(changed[1:], first[1:])
