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
