"""BRISQUE: natural-scene-statistics features + a regressor fitted on labelled images.

Mittal, Moorthy & Bovik, "No-Reference Image Quality Assessment in the Spatial Domain",
IEEE TIP 2012. Written here from the paper's description with numpy/scipy:

1. Luminance (BT.601 luma, 0-255) -> MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7
   Gaussian window (sigma 7/6), replicated borders.
2. A generalised Gaussian (GGD) fitted to the MSCN coefficients by moment matching:
   shape ``alpha`` and variance -> 2 features.
3. Products of neighbouring MSCN coefficients in 4 orientations (horizontal, vertical, and the
   two diagonals), each fitted with an asymmetric GGD (AGGD): shape, mean ``eta``, left and right
   variances -> 16 features.
4. The same 18 features at half resolution (antialiased bicubic downscale) -> 36 features.

The paper regresses with an RBF support-vector regressor (libsvm). scikit-learn is not available
here, so :class:`KernelRidgeRBF` does kernel ridge regression with an RBF kernel instead: the same
function class (an RBF kernel expansion over the training images) with a squared loss in place of
the epsilon-insensitive one, solved in closed form. Its kernel width and ridge strength are chosen
on the training images only, by exact leave-one-out cross-validation (closed form via one
eigendecomposition of the kernel matrix per width).

The GGD/AGGD helpers and :func:`nss_features` are shared with :mod:`engines.baselines.niqe`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage, special

from . import RegressedBaseline, standardize

MSCN_SIGMA = 7.0 / 6.0
MSCN_RADIUS = 3  # 7x7 window
MSCN_C = 1.0
N_FEATURES = 36
FEATURES_PER_SCALE = 18

_EPS = 1e-12
# Shape grid for moment-matching inversions. Both ratio functions are monotone in alpha, so the
# inversion is a 1-D interpolation (values outside the grid clamp to its ends).
_ALPHA = np.arange(0.2, 10.0, 0.001)
_G1, _G2, _G3 = special.gamma(1.0 / _ALPHA), special.gamma(2.0 / _ALPHA), special.gamma(3.0 / _ALPHA)
# GGD: E[x^2] / E[|x|]^2 as a function of alpha (decreasing)
_RHO_GGD = _G1 * _G3 / _G2 ** 2
# AGGD: Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) (increasing)
_RHO_AGGD = _G2 ** 2 / (_G1 * _G3)


# --------------------------------------------------------------------------- image -> luminance

def luminance(image: np.ndarray) -> np.ndarray:
    """An RGB/gray uint8 or uint16 image -> float64 luma in [0, 255].

    A 2-D float array is taken as luminance already on the 0-255 scale.
    """
    a = np.asarray(image)
    if a.ndim == 2 and np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64, copy=False)
    from ..images import to_rgb_uint8

    rgb = to_rgb_uint8(a).astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def downscale2(gray: np.ndarray) -> np.ndarray:
    """Half-size luminance (antialiased bicubic), float64."""
    h, w = gray.shape
    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    small = img.resize((max(w // 2, 1), max(h // 2, 1)), Image.Resampling.BICUBIC)
    return np.asarray(small, dtype=np.float64)


def mscn(gray: np.ndarray, return_sigma: bool = False):
    """Mean-subtracted contrast-normalised coefficients of a luminance image."""
    truncate = MSCN_RADIUS / MSCN_SIGMA
    mu = ndimage.gaussian_filter(gray, MSCN_SIGMA, truncate=truncate, mode="nearest")
    mu_sq = ndimage.gaussian_filter(gray * gray, MSCN_SIGMA, truncate=truncate, mode="nearest")
    sigma = np.sqrt(np.abs(mu_sq - mu * mu))
    coeffs = (gray - mu) / (sigma + MSCN_C)
    return (coeffs, sigma) if return_sigma else coeffs


# --------------------------------------------------------------------------- distribution fits

def ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean GGD fitted along the last axis: ``(alpha, variance)``.

    Vectorised over leading axes. A constant (all-zero) sample gives the largest grid shape and
    variance 0 rather than NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    m2 = np.mean(x * x, axis=-1)
    m1 = np.mean(np.abs(x), axis=-1)
    rho = (m2 + _EPS) / (m1 * m1 + _EPS)
    alpha = np.interp(rho, _RHO_GGD[::-1], _ALPHA[::-1])
    return alpha, m2


def aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric GGD fitted along the last axis: ``(alpha, eta, left_var, right_var)``.

    ``eta`` is the distribution's mean, ``(beta_r - beta_l) Gamma(2/a) / Gamma(1/a)``.
    """
    x = np.asarray(x, dtype=np.float64)
    sq = x * x
    neg, pos = x < 0, x > 0
    left_var = np.sum(np.where(neg, sq, 0.0), axis=-1) / np.maximum(neg.sum(axis=-1), 1)
    right_var = np.sum(np.where(pos, sq, 0.0), axis=-1) / np.maximum(pos.sum(axis=-1), 1)
    g = np.sqrt(left_var + _EPS) / np.sqrt(right_var + _EPS)
    m1 = np.mean(np.abs(x), axis=-1)
    m2 = np.mean(sq, axis=-1)
    r_hat = (m1 * m1 + _EPS) / (m2 + _EPS)
    big_r = r_hat * (g ** 3 + 1.0) * (g + 1.0) / (g * g + 1.0) ** 2
    alpha = np.interp(big_r, _RHO_AGGD, _ALPHA)
    g1, g2, g3 = special.gamma(1.0 / alpha), special.gamma(2.0 / alpha), special.gamma(3.0 / alpha)
    scale = np.sqrt(g1 / g3)
    beta_l, beta_r = np.sqrt(left_var) * scale, np.sqrt(right_var) * scale
    eta = (beta_r - beta_l) * g2 / g1
    return alpha, eta, left_var, right_var


def pairwise_products(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Neighbour products of MSCN maps ``(..., H, W)``: horizontal, vertical, main and anti diagonal."""
    return (m[..., :, :-1] * m[..., :, 1:],
            m[..., :-1, :] * m[..., 1:, :],
            m[..., :-1, :-1] * m[..., 1:, 1:],
            m[..., :-1, 1:] * m[..., 1:, :-1])


def nss_features(m: np.ndarray) -> np.ndarray:
    """The 18 BRISQUE statistics of MSCN maps ``(..., H, W)`` -> ``(..., 18)``."""
    lead = m.shape[:-2]
    alpha, var = ggd_fit(m.reshape(*lead, -1))
    feats = [alpha, var]
    for prod in pairwise_products(m):
        feats.extend(aggd_fit(prod.reshape(*lead, -1)))
    return np.stack(feats, axis=-1)


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of one image (float64)."""
    gray = luminance(image)
    if min(gray.shape) < 16:
        raise ValueError(f"image {gray.shape[1]}x{gray.shape[0]} too small for BRISQUE (min 16x16)")
    feats = []
    for scale in range(2):
        if scale:
            gray = downscale2(gray)
        feats.append(nss_features(mscn(gray)))
    return np.concatenate(feats)


# --------------------------------------------------------------------------- regressor

class KernelRidgeRBF:
    """Kernel ridge regression, RBF kernel, on z-scored features.

    ``gamma = g / n_features`` for ``g`` in ``gammas``; ``lam`` in ``lambdas``. Both are chosen by
    exact leave-one-out error on the training set (closed form, one ``eigh`` per gamma).
    The intercept is not penalised. Predicts ``K(x, X) @ coef + intercept``.
    """

    def __init__(self, gammas: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0),
                 lambdas: Sequence[float] = tuple(np.logspace(-3, 2, 16))):
        self.gammas = tuple(gammas)
        self.lambdas = tuple(lambdas)

    def _kernel(self, a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-gamma * np.maximum(d2, 0.0))

    def fit(self, x: np.ndarray, y: np.ndarray) -> KernelRidgeRBF:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n, dim = x.shape
        if n < 3:
            raise ValueError("need at least 3 training samples")
        self.mean_, self.scale_, z = standardize(x)
        yc = y - y.mean()
        best = None
        for g in self.gammas:
            gamma = g / dim
            k = self._kernel(z, z, gamma)
            # With an unpenalised intercept b, min |y - Kc - b|^2 + lam c'Kc has c in the centred
            # space: (PKP + lam I) c = P y, P = I - 11'/n. PKP's eigenvectors with non-zero
            # eigenvalues are orthogonal to 1, so the hat matrix is 11'/n + Q diag(w/(w+lam)) Q'.
            kc = k - k.mean(0, keepdims=True)
            kc = kc - kc.mean(1, keepdims=True)
            w, q = np.linalg.eigh((kc + kc.T) / 2)
            w = np.maximum(w, 0.0)
            qty = q.T @ yc
            q_sq = q * q
            for lam in self.lambdas:
                d = w / (w + lam)
                fitted = q @ (d * qty)
                h = 1.0 / n + q_sq @ d
                loo = (yc - fitted) / np.maximum(1.0 - h, 1e-9)
                err = float(np.mean(loo * loo))
                if best is None or err < best[0]:
                    coef = q @ (qty / (w + lam))
                    best = (err, gamma, lam, coef, float(np.mean(y - k @ coef)))
        self.loo_mse_, self.gamma_, self.lam_, self.coef_, self.intercept_ = best
        self.train_ = z
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return self._kernel(z, self.train_, self.gamma_) @ self.coef_ + self.intercept_


class Brisque(RegressedBaseline):
    """BRISQUE features + RBF kernel ridge regression fitted on the training images."""

    name = "brisque"
    version = "1"

    def feature_params(self) -> dict:
        return {"mscn_sigma": MSCN_SIGMA, "mscn_radius": MSCN_RADIUS, "scales": 2}

    def features_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([brisque_features(im) for im in images])

    def make_regressor(self) -> KernelRidgeRBF:
        return KernelRidgeRBF()
