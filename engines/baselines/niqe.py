"""NIQE: distance of an image's patch statistics from a model of pristine images.

Mittal, Soundararajan & Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL
2013. Written here from the paper's description with numpy/scipy:

- The luminance image is cropped to a multiple of the patch size (96) and cut into
  non-overlapping 96x96 patches. Each patch gets the 18 BRISQUE statistics (GGD of its MSCN
  coefficients, AGGD of the 4 neighbour products, see :mod:`.brisque`) at full resolution and
  the same 18 on the co-located 48x48 patch of the half-resolution image: 36 features.
- Pristine model: the patches of clean images whose sharpness (mean local deviation ``sigma``
  of the MSCN step) exceeds 0.75 x the sharpest patch of their image; a multivariate Gaussian
  ``(mu, cov)`` is fitted to their features. ``fit_pristine_model`` does it; the fitted model
  ships in ``data/niqe_pristine.npz`` (see ``data/README.md``), built with
  ``python -m engines.baselines.niqe fit-pristine``.
- Score of a test image: the MVG ``(mu2, cov2)`` of *all* its patches;
  ``sqrt((mu - mu2)' pinv((cov + cov2) / 2) (mu - mu2))``. Lower is better.

NIQE needs no labels. For comparison with MOS, :class:`Niqe` as a baseline maps ``-NIQE`` to the
MOS scale with a monotone logistic fitted on the training images (falling back to a straight
line if the fit fails); that mapping cannot change rank correlations.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import Baseline
from .brisque import downscale2, luminance, mscn, nss_features

PATCH_SIZE = 96
SHARPNESS_THRESHOLD = 0.75
DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL_PATH = DATA_DIR / "niqe_pristine.npz"
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".ppm")


@dataclass
class PristineModel:
    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    patch_size: int = PATCH_SIZE
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mu=self.mu, cov=self.cov, patch_size=np.int64(self.patch_size),
                 meta=np.array(json.dumps(self.meta, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_PATH) -> PristineModel:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NIQE pristine model not found: {path} (build it with "
                                    "`python -m engines.baselines.niqe fit-pristine`)")
        with np.load(path) as z:
            return cls(mu=z["mu"], cov=z["cov"], patch_size=int(z["patch_size"]),
                       meta=json.loads(str(z["meta"])))


def patch_features(image: np.ndarray, patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features ``(P, 36)`` and sharpness ``(P,)`` of one image."""
    if patch_size % 2:
        raise ValueError("patch size must be even")
    gray = luminance(image)
    h, w = gray.shape
    rows, cols = h // patch_size, w // patch_size
    if rows == 0 or cols == 0:
        raise ValueError(f"image {w}x{h} is smaller than one {patch_size}x{patch_size} NIQE patch")
    gray = gray[:rows * patch_size, :cols * patch_size]
    feats, sharpness = [], None
    p = patch_size
    for scale in range(2):
        if scale:
            gray = downscale2(gray)
            p //= 2
        coeffs, sigma = mscn(gray, return_sigma=True)
        patches = coeffs.reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(-1, p, p)
        feats.append(nss_features(patches))
        if scale == 0:
            sharpness = sigma.reshape(rows, p, cols, p).mean(axis=(1, 3)).ravel()
    return np.concatenate(feats, axis=1), sharpness


def fit_pristine_model(images: Iterable[np.ndarray], patch_size: int = PATCH_SIZE,
                       threshold: float = SHARPNESS_THRESHOLD, meta: dict | None = None) -> PristineModel:
    """Fit the pristine MVG on the sharp patches of clean images."""
    selected, n_images = [], 0
    for image in images:
        feats, sharp = patch_features(image, patch_size)
        keep = sharp > threshold * sharp.max() if sharp.max() > 0 else np.zeros_like(sharp, bool)
        selected.append(feats[keep])
        n_images += 1
    if not selected:
        raise ValueError("no images to fit the NIQE pristine model on")
    x = np.concatenate(selected)
    if x.shape[0] <= x.shape[1]:
        raise ValueError(f"only {x.shape[0]} sharp patches: need more than {x.shape[1]}")
    info = {"n_images": n_images, "n_patches": int(x.shape[0]), "threshold": threshold,
            **(meta or {})}
    return PristineModel(mu=x.mean(0), cov=np.cov(x, rowvar=False), patch_size=patch_size, meta=info)


def niqe_score(image: np.ndarray, model: PristineModel) -> float:
    """NIQE of one image against ``model``: lower is better."""
    feats, _ = patch_features(image, model.patch_size)
    mu2 = feats.mean(0)
    cov2 = np.cov(feats, rowvar=False) if feats.shape[0] > 1 else np.zeros_like(model.cov)
    d = model.mu - mu2
    return float(np.sqrt(max(d @ np.linalg.pinv((model.cov + cov2) / 2.0) @ d, 0.0)))


class Niqe(Baseline):
    """NIQE (opinion-unaware) with a logistic mapping of ``-NIQE`` to MOS fitted on training data."""

    name = "niqe"
    version = "1"

    def __init__(self, model_path: str | Path = DEFAULT_MODEL_PATH):
        self.model_path = Path(model_path)
        self._model: PristineModel | None = None

    @property
    def model(self) -> PristineModel:
        if self._model is None:
            self._model = PristineModel.load(self.model_path)
        return self._model

    def feature_params(self) -> dict:
        import hashlib

        m = self.model
        # key on the pristine model's content, not its path
        digest = hashlib.sha256(np.ascontiguousarray(m.mu).tobytes()
                                + np.ascontiguousarray(m.cov).tobytes()).hexdigest()[:16]
        return {"patch": m.patch_size, "pristine_model": digest}

    def features_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, 1)``: the NIQE score of each image (lower is better)."""
        return np.array([[niqe_score(im, self.model)] for im in images])

    def fit(self, features: np.ndarray, mos: np.ndarray) -> Niqe:
        from ..metrics import fit_logistic

        self.mapping_ = fit_logistic(-np.asarray(features, dtype=np.float64)[:, 0], mos, kind="logistic4")
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        q = -np.asarray(features, dtype=np.float64)[:, 0]
        return self.mapping_(q) if hasattr(self, "mapping_") else q


def pristine_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images under {root}")
    return files


def default_pristine_root() -> Path:
    # shared/ sits beside the repository checkout
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "pristine"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.baselines.niqe",
                                     description="NIQE tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fit = sub.add_parser("fit-pristine", help="fit the pristine MVG model on clean images")
    fit.add_argument("--root", type=Path, default=default_pristine_root(),
                     help="folder of pristine images (recursive)")
    fit.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    fit.add_argument("--patch", type=int, default=PATCH_SIZE)
    fit.add_argument("--threshold", type=float, default=SHARPNESS_THRESHOLD)
    score = sub.add_parser("score", help="NIQE of image files (lower is better)")
    score.add_argument("images", nargs="+", type=Path)
    score.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from ..images import read_rgb

    if args.cmd == "fit-pristine":
        files = pristine_images(args.root)
        folders = sorted({str(p.parent.relative_to(args.root)) for p in files})
        model = fit_pristine_model((read_rgb(p) for p in tqdm(files, desc="pristine", unit="img")),
                                   patch_size=args.patch, threshold=args.threshold,
                                   meta={"source": "shared/datasets/pristine", "folders": folders})
        model.save(args.out)
        print(f"wrote {args.out}: {model.meta['n_patches']} patches from {model.meta['n_images']} images")
    else:
        model = PristineModel.load(args.model)
        for p in args.images:
            print(f"{niqe_score(read_rgb(p), model):.4f}\t{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
