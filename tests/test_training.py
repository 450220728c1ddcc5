"""Training pipeline: losses, the pack, synthetic data, and a tiny end-to-end run on CPU.

The data here is made up on the spot (crops of scikit-image photos, blurred by a known amount,
with a "MOS" that falls with the blur), so the tests need nothing outside the repository.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from engines.train import data as D
from engines.train import fit as F
from engines.train import trainer as T

# ----------------------------------------------------------------------------- losses


def test_rank_loss_zero_when_ordered_with_margin_positive_otherwise():
    pred = torch.tensor([80.0, 60.0, 40.0])
    better = T.target_pairs(torch.tensor([3.0, 2.0, 1.0]))  # 0 > 1 > 2
    assert float(T.pairwise_rank_loss(pred, better, margin=0.1)) == 0.0
    # ordered, but closer than the margin (0.1 on the 0-1 scale = 10 points)
    close = torch.tensor([80.0, 75.0, 40.0])
    assert float(T.pairwise_rank_loss(close, better, margin=0.1)) > 0.0
    # wrong order
    swapped = torch.tensor([60.0, 80.0, 40.0])
    assert float(T.pairwise_rank_loss(swapped, better, margin=0.0)) > 0.0
    # no pairs at all: zero, and still differentiable
    p = torch.tensor([50.0, 50.0], requires_grad=True)
    loss = T.pairwise_rank_loss(p, torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_synthetic_pairs_only_within_image_and_type():
    src = torch.tensor([0, 0, 0, 0, 1])
    dtype = torch.tensor([-1, 3, 3, 5, 3])
    level = torch.tensor([0, 1, 2, 4, 1])
    b = T.synthetic_pairs(src, dtype, level)
    assert b[0, 1] and b[0, 2] and b[0, 3]  # the original beats every version of itself
    assert b[1, 2] and not b[2, 1]  # same type: lower level is better
    assert not b[1, 3] and not b[3, 1]  # different types: no known order
    assert not b[:4, 4].any() and not b[4, :4].any()  # different images: no pairs


def test_supcon_lower_for_aligned_embeddings():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)  # 4 classes x 4 samples
    centres = torch.randn(4, 16, generator=g) * 5
    aligned = centres[labels] + 0.05 * torch.randn(16, 16, generator=g)
    random = torch.randn(16, 16, generator=g)
    assert float(T.supcon_loss(aligned, labels)) < float(T.supcon_loss(random, labels)) - 0.5
    # no positives anywhere: 0
    assert float(T.supcon_loss(random, torch.arange(16))) == 0.0


def test_plcc_loss():
    y = torch.tensor([10.0, 30.0, 35.0, 80.0])
    assert float(T.plcc_loss(2 * y + 5, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(T.plcc_loss(-y, y)) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < float(T.plcc_loss(torch.tensor([1.0, 3.0, 2.0, 4.0]), y)) < 0.5


def test_regression_loss_scale():
    assert float(T.regression_loss(torch.tensor([60.0]), torch.tensor([50.0]), beta=0.0)) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- batches


def test_bank_batch_matches_serving_preprocessing():
    from engines.preprocess import prepare_batch

    imgs = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    bank = T.ImageBank(imgs)
    x = bank.batch(torch.tensor([2, 0]))
    ref = prepare_batch([imgs[2], imgs[0]], size=32)
    assert torch.allclose(x, ref, atol=1e-5)
    # augmentation only flips/shifts: the pixel values stay a permutation of the originals
    aug = bank.batch(torch.tensor([1]), augment=True, generator=torch.Generator().manual_seed(1), max_shift=4)
    assert aug.shape == ref[:1].shape
    vals = set(np.round(aug.numpy().ravel(), 4))
    assert vals <= set(np.round(prepare_batch([imgs[1]], size=32).numpy().ravel(), 4))


def test_tap_bank_holds_the_backbone_maps_of_each_image_and_its_mirror():
    from engines import create_model

    model = create_model("glint", pretrained=False).eval()
    imgs = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    bank = T.ImageBank(imgs)
    taps = T.TapBank(model, bank, mirrored=True, chunk=2)
    assert len(taps) == 3 and set(taps.taps) == {"s4", "s8", "s16", "s32", "head"}
    with torch.no_grad():
        plain = model.backbone_taps(bank.batch(torch.tensor([2, 0])))
        mirror = model.backbone_taps(bank.batch(torch.tensor([1])).flip(-1))
    got = taps.batch(torch.tensor([2, 0]))
    for k in plain:  # fp16 storage
        assert torch.allclose(got[k], plain[k], rtol=1e-2, atol=1e-2), k
    # augmentation draws between the image's maps and its mirror's, both seen over 16 draws
    gen = taps.generator(0)
    own = taps.batch([1])["s32"]
    seen = set()
    for _ in range(16):
        a = taps.batch([1], augment=True, generator=gen)["s32"]
        assert torch.allclose(a, own) or torch.allclose(a, mirror["s32"], rtol=1e-2, atol=1e-2)
        seen.add(bool(torch.equal(a, own)))
    assert seen == {True, False}
    # the model run from the maps is the model run from the images
    net = T.TapModel(model)
    with torch.no_grad():
        s_taps, _ = net(taps.batch([0, 1, 2]))
        s_img, _ = model(bank.batch([0, 1, 2]))
    assert torch.allclose(s_taps, s_img, atol=0.05)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_chain_sampler_batches_hold_whole_chains():
    labels = T.SyntheticLabels(
        src=torch.tensor([0] * 11 + [1] * 11), dtype=torch.tensor(([-1] + [0] * 5 + [1] * 5) * 2),
        level=torch.tensor(([0] + [1, 2, 3, 4, 5] * 2) * 2), target=torch.zeros(22))
    s = T.ChainSampler(labels, np.arange(22), types_per_batch=2, images_per_type=2, seed=0)
    idx = next(s)
    assert len(idx) == s.rows_per_batch == 24
    lv = labels.level[idx].numpy()
    assert (lv == 0).sum() == 4 and all((lv == k).sum() == 4 for k in range(1, 6))


# ----------------------------------------------------------------------------- made-up data


def _photo_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        y = int(rng.integers(0, p.shape[0] - size))
        x = int(rng.integers(0, p.shape[1] - size))
        out.append(np.ascontiguousarray(p[y:y + size, x:x + size, :3]))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A livec-like folder (blurred crops; MOS falls with the blur) and a pristine folder."""
    root = tmp_path_factory.mktemp("data")
    livec = root / "livec"
    (livec / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    with open(livec / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos", "mos_std", "original_name"])
        for i, img in enumerate(_photo_crops(18, 120, seed=2)):
            sigma = float(rng.uniform(0, 3))
            blurred = ndimage.gaussian_filter(img.astype(np.float32), (sigma, sigma, 0)).round().astype(np.uint8)
            name = f"{i:03d}.png"
            Image.fromarray(blurred).save(livec / "images" / name)
            w.writerow([name, f"{85 - 20 * sigma + rng.normal(0, 3):.3f}", "10.0", name])
    (livec / "LICENSE-LIVE.txt").write_text("notice\n")
    pristine = root / "pristine" / "set"
    pristine.mkdir(parents=True)
    for i, img in enumerate(_photo_crops(6, 150, seed=3)):
        Image.fromarray(img).save(pristine / f"p{i}.png")
    return livec, root / "pristine"


@pytest.fixture(scope="module")
def tiny_pack(dataset, tmp_path_factory):
    livec, pristine = dataset
    out = tmp_path_factory.mktemp("pack") / "trainpack"
    manifest = D.pack(livec, [pristine], out, size=64, include_skimage=False, workers=2, progress=False)
    return out, manifest


def test_pack_layout_and_fidelity(dataset, tiny_pack):
    livec, _ = dataset
    out, manifest = tiny_pack
    assert manifest["livec"]["count"] == 18 and manifest["pristine"]["count"] == 6
    assert manifest["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert (out / "LICENSE-LIVE.txt").is_file()
    with open(out / "livec.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(livec / "labels.csv", newline="") as f:
        labels = {r["image"]: float(r["mos"]) for r in csv.DictReader(f)}
    assert {r["image"] for r in rows} == set(labels)
    # the packed image is the serving-policy resize, up to a high-quality JPEG
    r = rows[5]
    from engines.images import read_rgb

    want = D.resize_whole(read_rgb(livec / "images" / r["image"]), 64).astype(np.float64)
    got = read_rgb(out / r["file"]).astype(np.float64)
    psnr = 10 * math.log10(255**2 / np.mean((want - got) ** 2))
    assert psnr > 35
    pk = D.load_pack(out)
    assert pk.livec.shape == (18, 64, 64, 3) and pk.pristine.shape == (6, 64, 64, 3)
    assert pk.mos[5] == pytest.approx(labels[r["image"]], abs=1e-3)
    small = D.load_pack(out, size=32, limit_livec=4, workers=1)
    assert small.livec.shape == (4, 32, 32, 3)


def test_pack_drops_pristine_to_fit_the_budget(dataset, tmp_path):
    livec, pristine = dataset
    full = D.pack(livec, [pristine], tmp_path / "a", size=64, include_skimage=False, workers=1, progress=False)
    per = full["bytes"] / 2**20
    m = D.pack(livec, [pristine], tmp_path / "b", size=64, include_skimage=False, workers=1, progress=False,
               max_mb=per - 0.004)  # a few pristine JPEGs too many
    assert 0 < m["pristine"]["dropped_to_fit"] < 6
    assert m["bytes"] <= (per - 0.004) * 2**20
    with pytest.raises(ValueError, match="livec images alone"):
        D.pack(livec, [pristine], tmp_path / "c", size=64, include_skimage=False, workers=1,
               progress=False, max_mb=0.01)


def test_pack_webp_with_backbone(dataset, tmp_path):
    """The carry-limit options: WebP images (smaller than the JPEG pack, still faithful) and the
    fp16 ImageNet weights inside the pack."""
    livec, pristine = dataset
    jpeg = D.pack(livec, [pristine], tmp_path / "j", size=64, include_skimage=False, workers=1, progress=False)
    m = D.pack(livec, [pristine], tmp_path / "w", size=64, include_skimage=False, workers=1, progress=False,
               codec="webp", livec_quality=90, pristine_quality=90, with_backbone=True)
    out = tmp_path / "w"
    assert m["codec"] == "webp" and m["backbone"] == D.BACKBONE_FILE and (out / D.BACKBONE_FILE).is_file()
    images = sorted((out / "livec").iterdir()) + sorted((out / "pristine").iterdir())
    assert len(images) == 24 and all(p.suffix == ".webp" for p in images)
    image_bytes = sum(p.stat().st_size for p in images)
    assert image_bytes < 0.8 * sum(p.stat().st_size for p in (tmp_path / "j").rglob("*.jpg"))
    assert m["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    from engines.images import read_rgb

    with open(out / "livec.csv", newline="") as f:
        r = list(csv.DictReader(f))[5]
    want = D.resize_whole(read_rgb(livec / "images" / r["image"]), 64).astype(np.float64)
    got = read_rgb(out / r["file"]).astype(np.float64)
    assert 10 * math.log10(255**2 / np.mean((want - got) ** 2)) > 30
    pk = D.load_pack(out)
    assert pk.livec.shape == (18, 64, 64, 3) and pk.manifest["codec"] == "webp"
    with pytest.raises(ValueError, match="codec"):
        D.pack(livec, [pristine], tmp_path / "x", size=64, include_skimage=False, workers=1, progress=False,
               codec="png")
    assert jpeg["codec"] == "jpeg" and jpeg["backbone"] is None


def test_synthetic_set_structure(tiny_pack):
    pk = D.load_pack(tiny_pack[0], limit_pristine=3)
    syn = D.generate_synthetic(pk.pristine, types_per_image=2, seed=0, workers=2, progress=False)
    assert len(syn) == 3 * (1 + 2 * 5) and syn.images.shape[1:] == (64, 64, 3)
    originals = syn.level == 0
    assert np.array_equal(syn.images[originals], pk.pristine)
    assert np.all(syn.quality[originals] == 1.0) and np.all(syn.quality[~originals] < 1.0)
    # every (image, type) chain has levels 1..5, the last one worse than the first
    for s in range(3):
        for t in set(syn.dtype[(syn.src == s) & ~originals]):
            m = (syn.src == s) & (syn.dtype == t)
            assert list(syn.level[m]) == [1, 2, 3, 4, 5]
            assert syn.quality[m][-1] < syn.quality[m][0]
    again = D.generate_synthetic(pk.pristine, types_per_image=2, seed=0, workers=1, progress=False)
    assert np.array_equal(again.images, syn.images)  # seeded: same set whatever the worker count
    assert D.usable_distortions(["blur-that-does-not-exist"])[1]


# ----------------------------------------------------------------------------- end to end


def _check_run(out, name, weights, folds):
    import engines

    res = json.loads((out / f"{name}_results.json").read_text())
    rows = [json.loads(line) for line in (out / f"{name}_losses.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    final = res["final"]["epoch_loss"]
    assert all(math.isfinite(v) for v in final) and final[-1] < final[0], final
    if folds:
        cv = res["cv"]
        assert cv["k"] == folds and [r["fold"] for r in cv["folds"]] == list(range(folds))
        assert sum(r["n_val"] for r in cv["folds"]) == res["pack"]["livec"]
        assert all(math.isfinite(r["srocc"]) and math.isfinite(r["plcc"]) for r in cv["folds"])
        assert set(cv["summary"]["median"]) >= {"srocc", "plcc"}
    assert res["weights"]["reload_max_abs_diff"] < 1.0
    model = engines.create_model(name, weights=weights)
    assert model.trained and model.weights_info["seed"] == 0
    assert model.weights_info["tiny"] is True
    assert model.input_size == F.TINY["size"]  # served at the size it was trained at
    with torch.no_grad():
        scores, maps = model(torch.zeros(2, 3, 64, 64))
    assert scores.shape == (2,) and bool(((scores >= 0) & (scores <= 100)).all())
    assert (out / f"{name}.pt").is_file()  # the copy that comes back from a device run
    return res


@pytest.mark.timeout(240)
def test_tiny_run_bifusion(tiny_pack, tmp_path):
    out, weights = tmp_path / "run", tmp_path / "w" / "bifusion.pt"
    F.main(["--model", "bifusion", "--pack", str(tiny_pack[0]), "--tiny", "--folds", "2", "--final",
            "--frozen-baseline", "--device", "cpu", "--out", str(out), "--weights-out", str(weights),
            "--no-progress", "--workers", "2"])
    res = _check_run(out, "bifusion", weights, folds=2)
    assert res["stage1"]["contrastive"] is True
    assert res["baseline"]["folds"] and len(res["baseline"]["folds"]) == 2
    assert res["synthetic"]["images"] > 0
    assert "srocc_image_median" in res["final"]["synthetic_test"]


@pytest.mark.timeout(240)
def test_tiny_run_frozen_backbone_trains_only_the_layers_after_it(tiny_pack, tmp_path):
    import engines
    from engines.backbone import load_pretrained_backbone

    out, weights = tmp_path / "run", tmp_path / "w" / "bifusion.pt"
    F.main(["--model", "bifusion", "--pack", str(tiny_pack[0]), "--tiny", "--folds", "2", "--final",
            "--frozen-backbone", "--device", "cpu", "--out", str(out), "--weights-out", str(weights),
            "--no-progress", "--workers", "2"])
    res = _check_run(out, "bifusion", weights, folds=2)
    assert res["stage1"]["contrastive"] is True and "livec_maps" in res["timings_s"]
    trained = engines.create_model("bifusion", weights=weights)
    assert trained.weights_info["frozen_backbone"] is True
    imagenet = load_pretrained_backbone(drop_classifier=True).state_dict()
    changed = [k for k, v in trained.backbone.state_dict().items()  # the file is fp16
               if not torch.equal(v.half(), imagenet[k].half())]
    assert not changed, changed[:5]  # while the layers after it learnt (_check_run: the loss fell)


@pytest.mark.timeout(240)
def test_tiny_run_glint_transfer(tiny_pack, tmp_path):
    from engines.models import shipped_weights

    shipped = shipped_weights("glint")
    before = shipped.stat().st_mtime_ns if shipped.exists() else None
    out = tmp_path / "run"
    F.main(["--model", "glint", "--pack", str(tiny_pack[0]), "--tiny", "--folds", "0", "--final",
            "--device", "cpu", "--out", str(out), "--no-progress", "--workers", "2"])
    # a smoke run writes its weights beside its results, never over the shipped ones
    res = _check_run(out, "glint", out / "glint.pt", folds=0)
    assert (shipped.stat().st_mtime_ns if shipped.exists() else None) == before
    tr = res["transfer"]
    assert tr["topk"] == 1 and 1 <= tr["distinct_anchors"] <= res["pack"]["pristine"]
    assert 0 < tr["anchor_mos_mean"] < 100
    assert res["stage1"]["contrastive"] is False


def test_native_recipe_cross_validates_ships_its_view_and_ranks_synthetic_levels(dataset, tiny_pack, tmp_path):
    """engines.train.native end to end at toy size: a fold, the final weights, the ranking term."""
    import json

    from engines.models import create_model
    from engines.train import native
    from engines.views import InputView

    livec, _ = dataset
    out = tmp_path / "run"
    argv = ["--model", "glint", "--csv", str(livec / "labels.csv"), "--view", "fragments", "--grid", "2",
            "--patch", "32", "--folds", "2", "--only-folds", "0", "--final", "--epochs", "1", "--batch", "4",
            "--test-draws", "2", "--syn-rank", "1", "--syn-types", "2", "--pack", str(tiny_pack[0]),
            "--syn-cache", "--out", str(out), "--no-progress", "--weights-out", str(out / "glint.pt")]
    assert native.main(argv) == 0
    res = json.loads((out / "glint_results.json").read_text())
    fold = res["per_fold"][0]
    assert fold["fold"] == 0 and fold["n"] == 9 and len(fold["pred"]) == 9 and np.isfinite(fold["srocc"])
    assert res["syn_rank"]["weight"] == 1.0 and (out / "glint_fold0.ckpt").is_file()
    served = create_model("glint", weights=out / "glint.pt")
    assert served.input_view == InputView("fragments", grid=2, patch=32) and served.input_size == 64
    assert served.weights_info["recipe"] == "engines.train.native"
    assert list(tiny_pack[0].glob("native-syn-t2-s0.npz"))  # the synthetic set is kept for the next run

    ranking = native.SyntheticRanking(tiny_pack[0], 2, cache=True, types=2)
    x, better = ranking.batch(InputView("fragments", grid=2, patch=32), np.random.default_rng(0))
    assert x.shape[0] == better.shape[0] == 11 and x.shape[-1] == 64  # clean + 2 chains x 5 levels
    assert not better.diagonal().any() and not better.T[0].any()
    assert better.sum(1)[0] == 10  # the batch's first row is the clean image: above all ten others


def test_native_crops_weights_record_the_served_whole_frame_view(dataset, tmp_path):
    """``--serve-size``: crops cannot be served, so the --final weights record the whole frame
    resized to that side (and the crops they were trained on, in their meta)."""
    from engines.models import create_model
    from engines.train import native
    from engines.views import InputView

    livec, _ = dataset
    out = tmp_path / "run"
    argv = ["--model", "bifusion", "--csv", str(livec / "labels.csv"), "--view", "crops", "--size", "64",
            "--folds", "1", "--final", "--epochs", "1", "--batch", "4", "--serve-size", "96",
            "--out", str(out), "--no-progress"]
    assert native.main(argv) == 0
    served = create_model("bifusion", weights=out / "bifusion.pt")
    assert served.input_view == InputView("resize", size=96) and served.input_size == 96
    assert served.weights_info["trained_view"] == InputView("crops", size=64).to_meta()
