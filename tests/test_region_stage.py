"""Stage 3 (region fine-tuning, ``engines.train.regions``): a tiny run on CPU.

Four scikit-image photos at 128x128 (4x4 map cells), two distorted versions and one pasted
region each, the shipped weights as start and teacher, 25 steps: the loss falls, nothing in
the backbone moves, only the modules after it train, and the cached path reproduces the
model's own forward.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engines import create_model
from engines.train import regions as R
from engines.train.pristine import fit, package_images

SIZE = 128


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    imgs = [fit(a, SIZE, "center_crop") for _, a in package_images(("astronaut", "chelsea", "coffee", "rocket"),
                                                                     sklearn=False)]
    return np.stack(imgs)


def test_split_leaves_out_test_photos_and_synthetic_holdout():
    names = [f"set/{i}.png" for i in range(40)] + ["skimage:astronaut", "skimage:coffee"]
    train, val = R.split_pristine(names, seed=0, holdout_share=0.15, val_images=3)
    hold = set(np.random.default_rng(0).permutation(len(names))[:6].tolist())  # engines.train.fit's rule
    used = set(train.tolist()) | set(val.tolist())
    assert not used & hold and not used & {40, 41}
    assert not set(train.tolist()) & set(val.tolist()) and len(val) == 3
    assert len(used) == len(names) - len(hold | {40, 41})


def test_random_regions_are_proper_boxes_on_the_grid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        r0, r1, c0, c1 = R.random_region(rng, 12)
        assert 0 <= r0 < r1 <= 12 and 0 <= c0 < c1 <= 12
        assert (r1 - r0) * (c1 - c0) < 144


@pytest.mark.parametrize("name", ["bifusion", "glint"])
def test_tiny_region_stage_trains_heads_only(photos, name):
    torch.manual_seed(0)
    model = create_model(name)
    x = R._to_input(photos[:2])
    with torch.no_grad():
        ref_s, ref_m = model(x)
        s, m = model.forward_taps(model.backbone_taps(x))
    assert torch.equal(ref_s, s) and torch.equal(ref_m, m)

    types = ["gaussian_blur", "white_noise", "jpeg", "blocking"]
    cache = R.build_cache(model, photos, np.arange(len(photos)), None, types, n_full=2, n_pasted=1,
                          seed=0, show_progress=False)
    assert len(cache) == 4 * (1 + 2 + 1)
    pasted = np.flatnonzero(cache.kind == 2)
    assert all(cache.kind[cache.full[r]] == 1 and cache.src[cache.full[r]] == cache.src[r] for r in pasted)
    teacher = R.Teacher(*R.predict_taps(copy.deepcopy(model), cache, np.arange(len(cache))))

    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    heads = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("backbone.")}
    cfg = R.RegionConfig(steps=25, images_per_step=4, livec_per_step=0, lr=1e-3, seed=0)
    stats = R.train_regions(model, cache, teacher, np.arange(len(photos)), cfg, show_progress=False)

    losses = np.asarray(stats["losses"])
    assert stats["steps"] == 25
    assert losses[-8:].mean() < 0.8 * losses[:8].mean(), losses
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())
    assert any(not torch.equal(p, dict(model.named_parameters())[n]) for n, p in heads.items())
    assert not model.training


def test_always_types_are_in_every_photos_chains(photos):
    """``always``: the named type is one of each photo's chains (levels 1-5), the others are
    drawn; without it, a draw of 2 of 6 types misses it on some photo."""
    model = create_model("glint", weights="none")
    types = ["high_sharpen", "color_saturation_1", "gaussian_blur", "banding", "jpeg", "underexposure"]

    def chains(**kw):
        cache = R.build_cache(model, photos, np.arange(len(photos)), None, types, n_full=0, n_pasted=0,
                              seed=0, show_progress=False, min_level=1, chains=2, **kw)
        names = np.asarray(cache.dtype)
        return [sorted(cache.level[(cache.src == s) & (names == "underexposure")].tolist())
                for s in range(len(photos))]

    assert chains(always=("underexposure",)) == [[1, 2, 3, 4, 5]] * len(photos)
    assert [] in chains()


def _level_chains(photos, name):
    """The shipped model, its cache of four photos with two 5-level chains each (types the
    shipped models rank poorly across; sharpening is even rewarded) and its teacher."""
    torch.manual_seed(0)
    model = create_model(name)
    types = ["high_sharpen", "color_saturation_1", "gaussian_blur", "banding"]
    cache = R.build_cache(model, photos, np.arange(len(photos)), None, types, n_full=0, n_pasted=1,
                          seed=0, show_progress=False, min_level=1, chains=2)
    teacher = R.Teacher(*R.predict_taps(copy.deepcopy(model), cache, np.arange(len(cache))))
    return model, cache, teacher


def _train_levels(model, cache, teacher, n, **kw):
    cfg = R.RegionConfig(steps=30, images_per_step=4, livec_per_step=0, lr=1e-3, seed=0,
                         w_level=2.0, level_images=4, level_rows=5, **kw)
    R.train_regions(model, cache, teacher, np.arange(n), cfg, show_progress=False)


@pytest.mark.parametrize("name", ["bifusion", "glint"])
def test_level_ranking_orders_levels_across_types(photos, name):
    """``w_level`` > 0: within one photo a lower level of any type must score higher. 30 steps
    raise the within-photo level SROCC of the training rows, and the backbone does not move."""
    from engines.train.trainer import synthetic_test

    model, cache, teacher = _level_chains(photos, name)
    full = cache.kind == 1
    assert len(cache) == 4 * (1 + 2 * 5 + 1)
    for s in range(len(photos)):  # two types per photo, each at every level 1-5
        chains = {t: sorted(cache.level[full & (cache.src == s) & (np.asarray(cache.dtype) == t)].tolist())
                  for t in set(np.asarray(cache.dtype)[full & (cache.src == s)])}
        assert len(chains) == 2 and all(v == [1, 2, 3, 4, 5] for v in chains.values())
    rows = np.flatnonzero(cache.kind <= 1)
    key = (cache.src[rows], np.asarray(cache.dtype, object)[rows], cache.level[rows])
    before = synthetic_test(teacher.scores[rows], *key)["srocc_image_mean"]

    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    _train_levels(model, cache, teacher, len(photos))
    after = synthetic_test(R.predict_taps(model, cache, rows)[0], *key)["srocc_image_mean"]
    assert after >= 0.8 and after > before + 0.3, (before, after)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())


def test_level_anchor_keeps_distorted_scores_at_the_teachers(photos):
    """Ranking alone may lift damaged frames toward the clean score (order is all it asks);
    ``w_anchor`` holds each distorted frame at most ``anchor_slack`` points above the teacher,
    and the ranking still rises."""
    from engines.train.trainer import synthetic_test

    model, cache, teacher = _level_chains(photos, "glint")
    rows = np.flatnonzero(cache.kind <= 1)
    dist = np.flatnonzero(cache.kind == 1)
    key = (cache.src[rows], np.asarray(cache.dtype, object)[rows], cache.level[rows])
    free = copy.deepcopy(model)
    _train_levels(free, cache, teacher, len(photos))
    _train_levels(model, cache, teacher, len(photos), w_anchor=5.0)

    def lift(m):  # mean points above teacher + slack over the distorted rows
        return float(np.maximum(R.predict_taps(m, cache, dist)[0] - teacher.scores[dist] - 2.0, 0).mean())

    before = synthetic_test(teacher.scores[rows], *key)["srocc_image_mean"]
    after = synthetic_test(R.predict_taps(model, cache, rows)[0], *key)["srocc_image_mean"]
    assert lift(model) < 0.5 * lift(free) and lift(free) > 1.0, (lift(model), lift(free))
    assert after > before + 0.2, (before, after)


def test_a_second_run_is_recorded_beside_the_first():
    meta = {"recipe": "stages 1-2"}
    assert R.record_run(meta, R.STAGE3_RECIPE, {"steps": 1}) == "stage3"
    assert R.record_run(meta, R.STAGE3_RECIPE + ", level ranking", {"steps": 2}) == "stage3.2"
    assert meta["stage3"] == {"steps": 1} and meta["stage3.2"] == {"steps": 2}
    assert meta["recipe"].startswith("stages 1-2 + stage 3: region") and "+ stage 3.2: region" in meta["recipe"]
