"""Full-reference quality scores and the pre-training set built from synthetic distortions.

Scores for a (reference, distorted) pair of ``uint8 (H, W, 3)`` RGB images of the same shape:

* ``ssim``: SSIM (Wang et al. 2004) on luma, scikit-image with the paper's settings (Gaussian
  window sigma 1.5, population covariance, K1=0.01, K2=0.03, data range 255). 1 = identical.
* ``ms_ssim``: multi-scale SSIM (Wang, Simoncelli & Bovik 2003) on luma: 5 scales, 2x2 average
  down-sampling, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); contrast-structure terms at
  scales 1-4 and the full SSIM at scale 5, each clipped at 0 before the power.  Images too small
  for 5 scales (the 11-px window must fit the coarsest scale: < 176 px) use fewer scales with
  the leading weights renormalised.  1 = identical.
* ``gmsd``: gradient magnitude similarity deviation (Xue et al. 2014) on luma in [0, 255]:
  2x2 average then down-sample by 2, Prewitt gradients, c = 170, standard deviation of the
  similarity map. 0 = identical; ~0.35 is about as bad as it gets.
* ``delta_e``: mean CIE76 colour difference (CIELAB Euclidean distance).  The three structural
  scores work on luma and are blind to colour loss and largely to brightness shifts; this term
  is what makes a fully desaturated or brightened image score below a pristine one.

Pseudo-MOS mapping (0-100, higher is better; :func:`pseudo_mos`)::

    d = mean(1 - ssim, 1 - ms_ssim, min(gmsd / 0.35, 1), min(delta_e / 40, 1))   # in [0, 1]
    pseudo_mos = 100 * exp(-d / 0.2)

Each term is a distortion amount normalised to [0, 1] (0 = identical); the exponential is
monotone, gives 100 for identical images, ~61 at d=0.1, ~37 at d=0.2, ~8 at d=0.5.  Averaged
over the 31 registered types on four 384x384 skimage photos, levels 1..5 land at about
75, 59, 46, 34, 25 (every type individually decreasing with level).  It is a
pseudo-label for pre-training (rank-consistent within an image and distortion type), not a
calibrated MOS: real MOS comes from fine-tuning on human ratings.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import color as skcolor
from skimage.metrics import structural_similarity

from .distortions import DISTORTIONS, LEVELS, apply

__all__ = [
    "FRScores",
    "PretrainRecord",
    "RankingPair",
    "MS_SSIM_WEIGHTS",
    "build_pretrain_set",
    "delta_e",
    "fr_scores",
    "gmsd",
    "ms_ssim",
    "pseudo_mos",
    "ranking_pairs",
    "sample_ranking_pair",
    "ssim",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SIGMA, _TRUNCATE = 1.5, 3.5
_WIN = 2 * int(_TRUNCATE * _SIGMA + 0.5) + 1  # 11, as scikit-image
_K1, _K2, _L = 0.01, 0.03, 255.0

GMSD_MAX = 0.35
DELTA_E_MAX = 40.0
MOS_SCALE = 0.2


def _check_pair(ref: np.ndarray, dist: np.ndarray) -> None:
    for a in (ref, dist):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError("expected uint8 (H, W, 3) RGB arrays")
    if ref.shape != dist.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {dist.shape}")


def _luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [0, 255], float64 (MATLAB rgb2gray weights)."""
    f = img.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """SSIM on luma (scikit-image, Wang et al. settings)."""
    _check_pair(ref, dist)
    return float(
        structural_similarity(
            _luma(ref), _luma(dist), data_range=_L, gaussian_weights=True, sigma=_SIGMA,
            use_sample_covariance=False,
        )
    )


def _ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term; same window/crop as scikit-image."""
    flt = dict(sigma=_SIGMA, truncate=_TRUNCATE, mode="reflect")
    ux, uy = ndimage.gaussian_filter(x, **flt), ndimage.gaussian_filter(y, **flt)
    vx = ndimage.gaussian_filter(x * x, **flt) - ux * ux
    vy = ndimage.gaussian_filter(y * y, **flt) - uy * uy
    vxy = ndimage.gaussian_filter(x * y, **flt) - ux * uy
    c1, c2 = (_K1 * _L) ** 2, (_K2 * _L) ** 2
    cs = (2 * vxy + c2) / (vx + vy + c2)
    lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
    p = (_WIN - 1) // 2
    crop = (slice(p, -p or None), slice(p, -p or None))
    return float((lum * cs)[crop].mean()), float(cs[crop].mean())


def _down2(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def _n_scales(h: int, w: int, max_scales: int = 5) -> int:
    n = 1
    while n < max_scales and min(h, w) // (2**n) >= _WIN:
        n += 1
    return n


def _ms_ssim_luma(x: np.ndarray, y: np.ndarray, scales: int = 5) -> tuple[float, float]:
    """(MS-SSIM, single-scale SSIM) of two luma arrays in [0, 255]."""
    if min(x.shape) < _WIN:
        raise ValueError(f"images need at least {_WIN} px per side for SSIM")
    m = _n_scales(*x.shape, max_scales=scales)
    w = np.asarray(MS_SSIM_WEIGHTS[:m])
    w = w / w.sum()
    vals, first_ssim = [], None
    for j in range(m):
        s, cs = _ssim_cs(x, y)
        if j == 0:
            first_ssim = s
        vals.append(max(s if j == m - 1 else cs, 0.0))
        if j < m - 1:
            x, y = _down2(x), _down2(y)
    return float(np.prod(np.power(vals, w))), float(first_ssim)


def ms_ssim(ref: np.ndarray, dist: np.ndarray, scales: int = 5) -> float:
    """Multi-scale SSIM on luma (see module docstring)."""
    _check_pair(ref, dist)
    return _ms_ssim_luma(_luma(ref), _luma(dist), scales)[0]


_PREWITT_X = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float64) / 3.0


def _gmsd_luma(x: np.ndarray, y: np.ndarray, c: float = 170.0) -> float:
    k = np.ones((2, 2)) / 4.0
    x = ndimage.convolve(x, k, mode="nearest")[::2, ::2]
    y = ndimage.convolve(y, k, mode="nearest")[::2, ::2]

    def gm(a: np.ndarray) -> np.ndarray:
        gx = ndimage.convolve(a, _PREWITT_X, mode="nearest")
        gy = ndimage.convolve(a, _PREWITT_X.T, mode="nearest")
        return np.sqrt(gx * gx + gy * gy)

    mx, my = gm(x), gm(y)
    gms = (2 * mx * my + c) / (mx * mx + my * my + c)
    return float(gms.std())


def gmsd(ref: np.ndarray, dist: np.ndarray) -> float:
    """Gradient magnitude similarity deviation on luma (0 = identical, larger = worse)."""
    _check_pair(ref, dist)
    return _gmsd_luma(_luma(ref), _luma(dist))


def _lab(img: np.ndarray) -> np.ndarray:
    return skcolor.rgb2lab(img.astype(np.float32) / np.float32(255.0))


def delta_e(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean CIE76 colour difference in CIELAB (0 = identical)."""
    _check_pair(ref, dist)
    d = _lab(ref) - _lab(dist)
    return float(np.sqrt((d * d).sum(axis=-1)).mean())


@dataclass(frozen=True)
class FRScores:
    ssim: float
    ms_ssim: float
    gmsd: float
    delta_e: float

    @property
    def distortion_amount(self) -> float:
        """Mean of the four normalised distortion terms, in [0, 1] (0 = identical)."""
        terms = (
            1.0 - self.ssim,
            1.0 - self.ms_ssim,
            min(self.gmsd / GMSD_MAX, 1.0),
            min(self.delta_e / DELTA_E_MAX, 1.0),
        )
        return float(np.clip(np.mean(terms), 0.0, 1.0))

    @property
    def pseudo_mos(self) -> float:
        return pseudo_mos(self)


def fr_scores(ref: np.ndarray, dist: np.ndarray) -> FRScores:
    """All full-reference scores for one pair (one luma pass shared by SSIM and MS-SSIM).

    ``ssim`` here is scale 1 of the MS-SSIM pass: the same computation as :func:`ssim`
    (scikit-image), to floating-point precision.
    """
    _check_pair(ref, dist)
    return _fr_scores_prepared(_luma(ref), _lab(ref), dist)


def _fr_scores_prepared(x: np.ndarray, lab_ref: np.ndarray, dist: np.ndarray) -> FRScores:
    """:func:`fr_scores` with the reference's luma and CIELAB computed once by the caller."""
    y = _luma(dist)
    ms, s = _ms_ssim_luma(x, y)
    de = lab_ref - _lab(dist)
    return FRScores(
        ssim=s,
        ms_ssim=ms,
        gmsd=_gmsd_luma(x, y),
        delta_e=float(np.sqrt((de * de).sum(axis=-1)).mean()),
    )


def pseudo_mos(scores: FRScores) -> float:
    """0-100 pseudo-MOS, higher is better: ``100 * exp(-d / 0.2)`` (module docstring)."""
    return float(100.0 * math.exp(-scores.distortion_amount / MOS_SCALE))


# --------------------------------------------------------------------------------------------
# pre-training set


@dataclass(frozen=True)
class PretrainRecord:
    image_id: str
    distortion: str  # registry name; "reference" for the undistorted image
    level: int  # 1..5; 0 for the reference
    distorted: np.ndarray  # uint8 (H, W, 3)
    pseudo_mos: float
    scores: FRScores
    seed: int  # seed of the Generator that made it (same for all levels of one image/type)

    @property
    def family(self) -> str:
        return DISTORTIONS[self.distortion].family if self.distortion in DISTORTIONS else "reference"


def _as_items(images: Iterable) -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(images, dict):
        images = images.items()
    for i, item in enumerate(images):
        if isinstance(item, tuple):
            yield str(item[0]), item[1]
        else:
            yield f"img{i:05d}", item


_PERFECT = FRScores(ssim=1.0, ms_ssim=1.0, gmsd=0.0, delta_e=0.0)


def build_pretrain_set(
    images: Iterable,
    types: Sequence[str] | None = None,
    levels: Sequence[int] = LEVELS,
    rng: np.random.Generator | None = None,
    *,
    include_reference: bool = False,
) -> Iterator[PretrainRecord]:
    """Distort every image with every type at every level and pseudo-label it.

    ``images``: arrays, ``(image_id, array)`` pairs, or a dict id -> array (uint8 RGB).
    ``types``: registry names (default: all of ``DISTORTIONS``).  Yields
    ``len(images) * len(types) * len(levels)`` records (plus one reference record per image
    with ``include_reference``), image by image, type by type, level by level.

    Determinism: one seed is drawn from ``rng`` per (image, type) and every level of that pair
    is made from a fresh ``default_rng(seed)``, so the levels share their random draws (same
    motion direction, same noise field scaled up, ...) and differ only in severity; the whole
    set is reproducible from the seed of ``rng``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    types = list(DISTORTIONS) if types is None else list(types)
    for t in types:
        if t not in DISTORTIONS:
            raise KeyError(f"unknown distortion {t!r}")
    levels = list(levels)
    for lv in levels:
        if lv not in LEVELS:
            raise ValueError(f"level {lv!r} not in {LEVELS}")
    for image_id, img in _as_items(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {image_id!r}: expected a uint8 (H, W, 3) RGB array")
        x_ref, lab_ref = _luma(img), _lab(img)
        if include_reference:
            yield PretrainRecord(image_id, "reference", 0, img, 100.0, _PERFECT, -1)
        for t in types:
            seed = int(rng.integers(0, 2**63 - 1))
            for lv in levels:
                out = apply(t, img, lv, np.random.default_rng(seed))
                sc = _fr_scores_prepared(x_ref, lab_ref, out)
                yield PretrainRecord(image_id, t, lv, out, sc.pseudo_mos, sc, seed)


def ranking_pairs(records: Iterable[PretrainRecord], min_gap: int = 1) -> list[tuple[PretrainRecord, PretrainRecord]]:
    """All ``(better, worse)`` pairs of records of the same image and distortion type whose
    levels differ by at least ``min_gap`` (the lower level is the better one; a reference
    record, level 0, pairs with every type of its image)."""
    groups: dict[tuple[str, str], list[PretrainRecord]] = defaultdict(list)
    refs: dict[str, PretrainRecord] = {}
    for r in records:
        if r.level == 0:
            refs[r.image_id] = r
        else:
            groups[(r.image_id, r.distortion)].append(r)
    pairs = []
    for (image_id, _), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.level)
        if image_id in refs:
            rs = [refs[image_id]] + rs
        for i, a in enumerate(rs):
            for b in rs[i + 1 :]:
                if b.level - a.level >= min_gap:
                    pairs.append((a, b))
    return pairs


@dataclass(frozen=True)
class RankingPair:
    distortion: str
    better_level: int  # 0 = the undistorted image
    worse_level: int
    better: np.ndarray
    worse: np.ndarray


def sample_ranking_pair(
    img: np.ndarray,
    rng: np.random.Generator,
    types: Sequence[str] | None = None,
    *,
    allow_reference: bool = True,
    min_gap: int = 1,
) -> RankingPair:
    """One on-line ranking pair: a random type, two levels ``lo < hi`` (``lo`` may be 0, the
    image itself, when ``allow_reference``), both made with the same seed so the pair differs
    only in severity.  No labels needed: ``worse`` has lower quality than ``better``."""
    types = list(DISTORTIONS) if types is None else list(types)
    t = types[int(rng.integers(len(types)))]
    lo_min = 0 if allow_reference else 1
    candidates = [(a, b) for a in range(lo_min, 6) for b in range(a + 1, 6) if b - a >= min_gap]
    if not candidates:
        raise ValueError(f"no level pair with gap >= {min_gap}")
    lo, hi = candidates[int(rng.integers(len(candidates)))]
    seed = int(rng.integers(0, 2**63 - 1))
    better = img.copy() if lo == 0 else apply(t, img, lo, np.random.default_rng(seed))
    worse = apply(t, img, hi, np.random.default_rng(seed))
    return RankingPair(t, lo, hi, better, worse)
