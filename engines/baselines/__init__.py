"""Classical and frozen-feature baselines the trained models are measured against.

Each baseline turns an image into a feature vector (:meth:`Baseline.features_batch`), is fitted
on labelled training features (:meth:`Baseline.fit`) and predicts quality on the 0-100 MOS scale,
higher is better (:meth:`Baseline.predict`). :meth:`Baseline.extract_paths` computes features for
a list of image files with a progress bar and caches them in an ``.npz`` keyed by a hash of the
image list (path, size, mtime) and the extractor's parameters, so reruns are fast.

- ``brisque``: BRISQUE features + RBF kernel ridge regression (:mod:`.brisque`).
- ``niqe``: NIQE distance to a pristine-image model shipped in ``data/`` + a monotone logistic
  mapping to MOS fitted on the training images (:mod:`.niqe`).
- ``frozen-ridge``: frozen ImageNet Lite0 features (mean+std at 5 depths) + ridge regression
  (:mod:`.frozen_ridge`), the floor a trained model must beat; ``frozen-ridge-native`` the same
  with every image at its native size.
- ``lite0-finetune`` (:mod:`.finetuned`): not a feature baseline but the plain Lite0 fine-tuned
  end to end on native crops in each fold (``engines.train.native``), the recipe the paper
  architectures must beat.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..registry import resolve

log = logging.getLogger(__name__)

# name -> its class: the one list of baseline names (adding one: a new file and a line here)
BASELINES = {
    "brisque": "engines.baselines.brisque:Brisque",
    "niqe": "engines.baselines.niqe:Niqe",
    "frozen-ridge": "engines.baselines.frozen_ridge:FrozenRidge",
    "frozen-ridge-native": "engines.baselines.frozen_ridge:FrozenRidgeNative",
}


def default_cache_dir() -> Path:
    """``$VQMON_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/vqmon/features`` (``~/.cache``)."""
    if os.environ.get("VQMON_CACHE_DIR"):
        return Path(os.environ["VQMON_CACHE_DIR"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqmon" / "features"


class Baseline(ABC):
    """Features per image, a regressor fitted on labelled features, predictions (0-100, higher better)."""

    name: str = ""
    version: str = "1"  # bump when the features change: it is part of the cache key
    batch_size: int = 1  # images handed to features_batch at once

    def feature_params(self) -> dict:
        """Everything the features depend on besides the images (part of the cache key)."""
        return {}

    @abstractmethod
    def features_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``B`` RGB uint8 images -> features ``(B, D)``."""

    @abstractmethod
    def fit(self, features: np.ndarray, mos: np.ndarray) -> Baseline:
        """Fit the regressor on training features ``(N, D)`` and their MOS ``(N,)``."""

    @abstractmethod
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Quality ``(N,)`` on the MOS scale, higher is better."""

    # ------------------------------------------------------------------ feature cache

    def cache_key(self, paths: Sequence[str | Path]) -> str:
        files = []
        for p in paths:
            st = os.stat(p)
            files.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
        blob = json.dumps({"baseline": self.name, "version": self.version,
                           "params": self.feature_params(), "files": files}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def extract_paths(self, paths: Sequence[str | Path], cache_dir: str | Path | None = None,
                      progress: bool = True,
                      loader: Callable[[Path], np.ndarray] | None = None) -> np.ndarray:
        """Features of image files ``(N, D)``, read from / written to the cache when ``cache_dir``
        is given (pass ``False``-y to disable; ``default_cache_dir()`` is the usual choice)."""
        if loader is None:
            from ..images import read_rgb as loader
        paths = [Path(p) for p in paths]
        cache_file = None
        if cache_dir:
            cache_file = Path(cache_dir) / f"{self.name}-{self.cache_key(paths)}.npz"
            if cache_file.is_file():
                try:
                    with np.load(cache_file) as z:
                        feats = z["features"]
                    if feats.shape[0] == len(paths):
                        log.info("%s features from cache %s", self.name, cache_file)
                        return feats
                except (OSError, KeyError, ValueError) as e:
                    log.warning("ignoring unreadable feature cache %s: %s", cache_file, e)
        feats = self._extract(paths, progress, loader)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, features=feats, paths=np.array([str(p) for p in paths]))
            os.replace(tmp, cache_file)
        return feats

    def _extract(self, paths: list[Path], progress: bool,
                 loader: Callable[[Path], np.ndarray]) -> np.ndarray:
        from tqdm import tqdm

        out = []
        with tqdm(total=len(paths), desc=f"{self.name} features", unit="img",
                  disable=not progress, leave=False) as bar:
            for start in range(0, len(paths), self.batch_size):
                chunk = paths[start:start + self.batch_size]
                out.append(np.asarray(self.features_batch([loader(p) for p in chunk]),
                                      dtype=np.float64))
                bar.update(len(chunk))
        return np.concatenate(out, axis=0)


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature mean and scale (constant features keep scale 1) and the standardised ``x``."""
    mean = x.mean(0)
    sd = x.std(0)
    scale = np.where(sd > 1e-12, sd, 1.0)
    return mean, scale, (x - mean) / scale


class RegressedBaseline(Baseline):
    """A baseline whose features go through one regressor object (``fit``/``predict``)."""

    @abstractmethod
    def make_regressor(self):
        """A fresh, unfitted regressor with ``fit(X, y)`` and ``predict(X)``."""

    def fit(self, features: np.ndarray, mos: np.ndarray) -> RegressedBaseline:
        self.regressor_ = self.make_regressor().fit(features, mos)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not hasattr(self, "regressor_"):
            raise RuntimeError(f"{self.name} regressor is not fitted: call fit() on labelled features")
        return self.regressor_.predict(features)


def list_baselines() -> list[str]:
    return sorted(BASELINES)


def create_baseline(name: str, **kwargs) -> Baseline:
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; available: {', '.join(list_baselines())}")
    return resolve(BASELINES[name])(**kwargs)


__all__ = ["BASELINES", "Baseline", "create_baseline", "default_cache_dir", "list_baselines"]
