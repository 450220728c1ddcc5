"""Frozen ImageNet Lite0 features + ridge regression: the floor a trained model must beat.

Each image is resized whole to 384x384 (``engines.preprocess.prepare_batch``; the old input
policy of the models), or taken at its native size (``frozen-ridge-native``), and run through the ImageNet EfficientNet-Lite0 backbone, frozen.
Its feature maps at 5 depths (strides 4, 8, 16, 32 and the 1280-channel head) are pooled to their
per-channel spatial mean and standard deviation: ``2 x (24 + 40 + 112 + 320 + 1280) = 3552``
features. A ridge regression (closed form via SVD of the z-scored training features) maps them to
MOS; its strength ``alpha`` is chosen on the training images only by exact leave-one-out
cross-validation (the closed-form PRESS residuals ``e_i / (1 - h_ii)``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import RegressedBaseline, standardize

DEPTHS = ("s4", "s8", "s16", "s32", "head")
CHANNELS = {"s4": 24, "s8": 40, "s16": 112, "s32": 320, "head": 1280}
N_FEATURES = 2 * sum(CHANNELS.values())
INPUT_SIZE = 384


class RidgeLOO:
    """Ridge regression on z-scored features with intercept; alpha by exact leave-one-out CV."""

    def __init__(self, alphas: Sequence[float] = tuple(np.logspace(-1, 6, 36))):
        self.alphas = tuple(alphas)

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeLOO:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = x.shape[0]
        if n < 3:
            raise ValueError("need at least 3 training samples")
        self.mean_, self.scale_, z = standardize(x)
        self.y_mean_ = float(y.mean())
        yc = y - self.y_mean_
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        s2 = s * s
        uty = u.T @ yc
        u_sq = u * u
        errs = []
        for a in self.alphas:
            d = s2 / (s2 + a)
            resid = yc - u @ (d * uty)
            # columns of u are orthogonal to the constant (z is centred): h = 1/n + U diag(d) U'
            h = 1.0 / n + u_sq @ d
            loo = resid / np.maximum(1.0 - h, 1e-9)
            errs.append(float(np.mean(loo * loo)))
        best = int(np.argmin(errs))
        self.alpha_ = self.alphas[best]
        self.loo_mse_ = errs[best]
        self.loo_mse_path_ = np.array(errs)
        self.coef_ = vt.T @ (s / (s2 + self.alpha_) * uty)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return z @ self.coef_ + self.y_mean_


def pool_features(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Backbone feature maps -> ``(B, 3552)``: per depth, channel means then channel stds."""
    out = []
    for name in DEPTHS:
        f = feats[name].float().flatten(2)
        out.append(f.mean(dim=2))
        out.append(f.std(dim=2, unbiased=False))
    return torch.cat(out, dim=1)


class FrozenRidge(RegressedBaseline):
    """Frozen Lite0 multi-depth mean+std features + ridge regression."""

    name = "frozen-ridge"
    version = "1"
    batch_size = 8

    def __init__(self, input_size: int = INPUT_SIZE, device: str = "cpu"):
        self.input_size = input_size
        self.device = device
        self._backbone = None

    def feature_params(self) -> dict:
        import os

        from ..backbone import imagenet_weights_path

        w = imagenet_weights_path()
        return {"input_size": self.input_size, "depths": list(DEPTHS),
                "weights": [os.path.basename(w), os.path.getsize(w)]}

    @property
    def backbone(self):
        if self._backbone is None:
            from ..backbone import load_pretrained_backbone

            self._backbone = load_pretrained_backbone(drop_classifier=True).to(self.device)
        return self._backbone

    def features_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from ..backbone import normalize
        from ..preprocess import prepare_batch, to_rgb_uint8

        if self.input_size:
            batches = [prepare_batch(list(images), size=self.input_size)]
        else:  # native: each image at its own size
            batches = [normalize(torch.from_numpy(to_rgb_uint8(im)).permute(2, 0, 1)[None].float() / 255.0)
                       for im in images]
        with torch.inference_mode():
            return np.concatenate([pool_features(self.backbone.forward_features(x.to(self.device), with_head=True))
                                   .cpu().double().numpy() for x in batches])

    def make_regressor(self) -> RidgeLOO:
        return RidgeLOO()


class FrozenRidgeNative(FrozenRidge):
    """The same features with each image at its native size (no resize)."""

    name = "frozen-ridge-native"

    def __init__(self, device: str = "cpu", input_size: int = 0):
        super().__init__(input_size=input_size, device=device)
