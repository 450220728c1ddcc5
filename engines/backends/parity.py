"""Parity check: a compiled/low-precision backend must score like fp32 torch before use."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models.base import QualityModel
from ..preprocess import prepare_batch

# real photographs bundled inside scikit-image (no download), plus a blurred and a noisy copy
CALIBRATION_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "coins")
DEFAULT_TOLERANCE = 1.0  # score points on the 0-100 scale


class ParityError(RuntimeError):
    """The candidate backend disagrees with fp32 torch by more than the tolerance."""


def calibration_frames() -> list[np.ndarray]:
    import skimage.data
    from scipy.ndimage import gaussian_filter

    frames = [getattr(skimage.data, name)() for name in CALIBRATION_IMAGES]
    rng = np.random.default_rng(0)
    base = frames[0].astype(np.float32)
    frames.append(gaussian_filter(base, sigma=(3, 3, 0)).astype(np.uint8))
    frames.append(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))
    return frames


def reference_scores(model: QualityModel, x: torch.Tensor) -> np.ndarray:
    """fp32 eager torch on CPU: the ground truth every backend is held to."""
    ref = model.float().cpu().eval()
    with torch.inference_mode():
        return ref(x.float())[0].numpy()


def check_parity(model: QualityModel, candidate: Callable[[torch.Tensor], np.ndarray],
                 tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Max |score difference| of ``candidate`` vs fp32 torch on the calibration set.

    Raises ParityError when over ``tolerance``. Call before a model moves to another device or
    dtype, or pass a model copy: the reference runs the model in fp32 on CPU.
    """
    x = prepare_batch(calibration_frames(), model.input_size)
    expected = reference_scores(model, x)
    got = np.asarray(candidate(x), dtype=np.float32)
    diff = float(np.max(np.abs(got - expected)))
    if not np.isfinite(diff) or diff > tolerance:
        raise ParityError(f"scores differ from fp32 torch by {diff:.3f} points "
                          f"(tolerance {tolerance}) on {len(expected)} calibration images")
    return diff
