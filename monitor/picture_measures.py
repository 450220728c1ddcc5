"""Resolution-aware picture measures for the gross-damage rules (monitor.gross_rules).

The detectors in :mod:`monitor.detectors` measure on the sampled frame, whose size depends on
the source (a 720p picture is halved to 640 wide, a 1080p one divided by three), so the same
damage reads differently per source: noise of sigma 20 reads ~11 levels at 640 wide on a
640-wide source but ~3-5 on a 720p one. The measures here are defined at a fixed scale, so one
absolute threshold holds for every source:

``noise_native``  luma noise sigma in 8-bit levels **at the source resolution** (on the
                  decoded luma plane, ``luma_native``), read in the flattest parts of the
                  picture (a low percentile of block means of Immerkaer's noise-mask
                  responses), so that texture does not read as noise. Without the native
                  plane: the frame's luma, times the linear downscale factor (area averaging
                  divides white noise by it; approximate).
``edge_width``    width in pixels, at the fixed analysis width ``ANALYSIS_WIDTH`` (640 px;
                  wider frames are block-averaged down to it), of the picture's sharpest
                  edges: local gradient over local contrast, at its 99.9th percentile. Clean
                  pictures keep a sharp part (the subject in focus, text, lights), defocus
                  widens every edge.
``white_level``   the picture's white: the 99.9th percentile of luma (0..1). Under-exposure
                  scales it down with the rest of the picture; a night scene keeps its lights.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["ANALYSIS_WIDTH", "MEASURE_KEYS", "noise_native", "edge_width", "white_level", "measure"]

ANALYSIS_WIDTH = 640
MEASURE_KEYS = ("noise_native", "edge_width", "white_level")

_NOISE_MAX_SAMPLES = 1 << 17
_NOISE_BLOCK = 4
_NOISE_PERCENTILE = 5.0
# white noise of sigma s: |I*N| is half-normal of scale 6 s, and the 5th percentile of the
# means of 16 independent ones is 3.364 s (simulated, 400k blocks)
_NOISE_Q_TO_SIGMA = 1.0 / 3.3643
# values at or beyond these are clipped: limited-range black and white (16, 235) plus 1 level,
# where clipped RGB lands in video; then the plane's hard limits
_CLIP_LEVELS = ((17.0, 234.0), (2.0, 253.0))
_EDGE_BLOCK = 8
_EDGE_MIN_CONTRAST = 0.1
_EDGE_PERCENTILE = 99.9
_WHITE_PERCENTILE = 99.9


def noise_native(y8: np.ndarray, downscale: float = 1.0) -> float:
    """Noise sigma (8-bit levels) of a luma plane ``y8`` (levels 0..255, any dtype), at source scale.

    Immerkaer's mask ``[[1,-2,1],[-2,4,-2],[1,-2,1]]`` cancels smooth structure. Its absolute
    responses on a regular subgrid (every 3rd pixel or sparser, at most 2**17 of them) are averaged in blocks of 4 x 4;
    the 5th percentile of the block means (3.364 sigma for white noise) is read as the noise of the flattest parts of the
    picture (texture and edges lift the other blocks; white noise lifts every block alike).
    Blocks that touch a clipped value are left out, since clipping removes noise: within 1 level
    of limited-range black (16) or white (235), where clipped RGB lands in video (in a
    full-range plane that also leaves out the darkest and brightest 7 %, where noise is crushed
    as well); in a picture with fewer than 16 blocks left that way, only those at 0-2 or 253-255.
    ``downscale`` > 1: the plane was scaled down by that linear factor from the source, which
    divided white noise by about as much; the estimate is multiplied back. nan when fewer than
    16 blocks are left.
    """
    y = np.asarray(y8)
    if y.ndim != 2 or min(y.shape) < 3:
        return float("nan")
    h, w = y.shape[0] - 2, y.shape[1] - 2
    # a step of 3 or more keeps the 3 x 3 responses independent, so that the percentile of
    # the block means reads the same at every resolution
    step = max(3, math.ceil(math.sqrt(h * w / _NOISE_MAX_SAMPLES)))
    yf = y.astype(np.float32) if y.dtype != np.float32 else y

    def at(dy: int, dx: int) -> np.ndarray:
        return yf[dy:dy + h:step, dx:dx + w:step]

    r = np.abs(at(0, 0) + at(0, 2) + at(2, 0) + at(2, 2)
               - 2.0 * (at(0, 1) + at(1, 0) + at(1, 2) + at(2, 1)) + 4.0 * at(1, 1))
    b = _NOISE_BLOCK
    bh, bw = r.shape[0] // b, r.shape[1] // b
    if bh * bw < 16:
        return float("nan")
    means = r[:bh * b, :bw * b].reshape(bh, b, bw, b).mean(axis=(1, 3))
    for low, high in _CLIP_LEVELS:  # video's levels first; a picture that is nearly all black
        if float(yf.min()) > low and float(yf.max()) < high:  # or white: the hard ones
            break
        clip = (yf <= low) | (yf >= high)
        near = np.zeros(r.shape, dtype=bool)
        for dy in range(3):
            for dx in range(3):
                near |= clip[dy:dy + h:step, dx:dx + w:step]
        kept = means[~near[:bh * b, :bw * b].reshape(bh, b, bw, b).any(axis=(1, 3))]
        if kept.size >= 16:
            means = kept
            break
    else:
        return float("nan")
    q = float(np.percentile(means, _NOISE_PERCENTILE))
    return q * _NOISE_Q_TO_SIGMA * max(float(downscale), 1.0)


def _analysis_luma(y: np.ndarray) -> np.ndarray:
    """Luma at ANALYSIS_WIDTH at most: frames 1.5x wider or more are block-averaged down."""
    k = int(y.shape[1] // ANALYSIS_WIDTH) if y.shape[1] >= 1.5 * ANALYSIS_WIDTH else 1
    if k <= 1:
        return y
    h, w = (y.shape[0] // k) * k, (y.shape[1] // k) * k
    return y[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def edge_width(y: np.ndarray) -> float:
    """Width in pixels (at ANALYSIS_WIDTH) of the sharpest edges of luma ``y`` (0..1).

    At every pixel the gradient (central differences) is divided by the local contrast (max -
    min luma over the 3 x 3 blocks of 8 x 8 pixels around it): a step edge blurred over ``n``
    pixels gives about ``1/n``. Over the pixels whose neighbourhood holds a contrast of at
    least 0.1, the 99.9th percentile of that ratio is the sharpest edges' slope, and its
    inverse is returned: ~1-3 px on clean pictures (some part is in focus), ~4-6 px after a
    Gaussian blur of sigma 4 px or a 9 px box. nan when fewer than 50 pixels have enough
    contrast (a flat picture).
    """
    y = _analysis_luma(np.asarray(y, dtype=np.float32))
    b = _EDGE_BLOCK
    bh, bw = y.shape[0] // b, y.shape[1] // b
    if bh < 3 or bw < 3:
        return float("nan")
    y = y[:bh * b, :bw * b]
    blocks = y.reshape(bh, b, bw, b)
    hi = ndimage.maximum_filter(blocks.max(axis=(1, 3)), 3, mode="nearest")
    lo = ndimage.minimum_filter(blocks.min(axis=(1, 3)), 3, mode="nearest")
    contrast = hi - lo
    busy_blocks = contrast >= _EDGE_MIN_CONTRAST
    if np.count_nonzero(busy_blocks) < 2:
        return float("nan")
    gx = np.zeros_like(y)
    gy = np.zeros_like(y)
    gx[:, 1:-1] = y[:, 2:] - y[:, :-2]
    gy[1:-1, :] = y[2:, :] - y[:-2, :]
    # per block (bh, bw, b*b), so that each busy block's pixels meet its own contrast
    g2 = (gx * gx + gy * gy).reshape(bh, b, bw, b).transpose(0, 2, 1, 3).reshape(bh, bw, b * b)
    ratio = (g2[busy_blocks] / (contrast * contrast)[busy_blocks][:, None]).ravel()
    if ratio.size < 50:
        return float("nan")
    k = int(round(ratio.size * _EDGE_PERCENTILE / 100.0))
    k = min(max(k, 0), ratio.size - 1)
    slope = 0.5 * math.sqrt(float(np.partition(ratio, k)[k]))
    return 1.0 / max(slope, 1e-3)


def white_level(y: np.ndarray) -> float:
    """99.9th percentile of luma ``y`` (0..1), on a subsample of at most ~2**17 pixels."""
    y = np.asarray(y)
    step = max(1, math.ceil(math.sqrt(y.size / _NOISE_MAX_SAMPLES)))
    return float(np.percentile(y[::step, ::step], _WHITE_PERCENTILE))


def measure(y: np.ndarray, luma_native: np.ndarray | None = None,
            downscale: float = 1.0) -> dict[str, float]:
    """The three measures of one sampled frame: ``y`` its luma (0..1), ``luma_native`` the
    decoded luma plane at source resolution (levels), ``downscale`` source width / frame width."""
    if luma_native is not None:
        noise = noise_native(luma_native)
    else:
        noise = noise_native(y * 255.0, downscale)
    return {"noise_native": noise, "edge_width": edge_width(y), "white_level": white_level(y)}
