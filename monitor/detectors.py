"""Cheap broadcast-QC detectors for sampled frames and frame timing.

Two small, per-stream, stateful classes that the monitor's stream workers call:

``FrameDetectors.update(frame_rgb, pts, wall_time) -> dict[str, float]``
    Picture detectors on one *sampled* frame (``uint8`` RGB, ``H x W x 3``). The frame is
    usually already downscaled (e.g. 640 wide or the model's 384x384); every value is a
    fraction, a ratio, a level on the 8-bit scale or a duration, so no value needs the
    source resolution, except blockiness, whose block grid moves when the frame is scaled
    (pass ``source_size`` so it knows where the codec's 8x8 grid lies; see below), or
    pass ``luma_native``, the decoded picture's own luma plane, on which the two block
    measures (``blockiness``, ``mb_edge_breaks``) then run at the codec's own grid.

``TimingDetectors.on_frame(pts, wall_time)`` / ``TimingDetectors.values(now) -> dict``
    Stall, frame-rate and PTS-continuity values from the timestamps of decoded frames.

numpy and scipy only. A value is ``nan`` when it cannot be measured on this frame (e.g.
blockiness and blur on a flat black picture, freeze on the first frame); the alert engine
treats ``nan`` as "no data" and neither fires nor clears on it.

Keys returned by :meth:`FrameDetectors.update` (``FRAME_KEYS``)
-------------------------------------------------------------
``black``          fraction of pixels whose luma is below ``black_pixel_threshold`` (0..1).
                   The picture is black when it is ``>= black_ratio_threshold`` (0.98), as
                   FFmpeg ``blackdetect`` (``pix_th=0.10``, ``picture_black_ratio_th=0.98``).
``black_seconds``  how long the picture has been black without a break, on the stream's
                   own clock (pts, or wall time when pts is unknown); 0 when not black.
``freeze_db``      change from the freeze reference frame in dB: ``20*log10(MAFD)`` where
                   MAFD is the mean absolute difference of the luma normalised to 0..1 --
                   the amplitude convention FFmpeg ``freezedetect`` uses for its ``noise``
                   option (``-60dB`` == 0.001). ``0 dB`` = every pixel flipped black<->white,
                   floored at ``freeze_db_floor`` (-120 dB) for identical pictures.
``frozen``         1.0 when this sample shows the same picture as the reference (change
                   ``<= freeze_noise_db``) *and* its timestamp advanced, else 0.0.
                   Never set on a black picture (``black`` reports that).
``freeze_seconds`` how long the picture has been frozen (timestamp now minus the
                   reference's), 0 when not frozen. FFmpeg reports a freeze once this
                   reaches ``d=2`` s; the alert side applies the same minimum duration.
``blockiness``     8x8 block-boundary discontinuity ratio: mean luma gradient across block
                   boundaries / mean gradient inside blocks. ~1.0 for clean pictures,
                   larger when blocky (JPEG q5 of a natural image: ~2-4).
``blur``           perceptual blur (Crete-Roffet et al. 2007, as ``skimage.measure.
                   blur_effect``): 0 = sharp, 1 = maximally blurred; *higher = blurrier*.
                   Depends on content and on the sampled resolution, so the default alert
                   compares it with the stream's own baseline.
``noise_sigma``    noise standard deviation in 8-bit levels, mean over R, G, B, robust
                   Immerkaer estimate (see :func:`estimate_noise_sigma`).
``mb_edge_breaks`` fraction of the 16x16 macroblock edges that are *broken*: the luma step
                   across the edge, summed along its 16 pixels, exceeds ``mb_edge_ratio`` (3)
                   times the larger step on either side of it plus ``mb_edge_min_step`` (4)
                   levels per pixel. Packet loss concealment, smear and misplaced blocks break
                   macroblock edges in a part of the picture while the rest stays intact, which
                   the global ``blockiness`` ratio dilutes; starved encoders break them too.
                   Clean footage 0-0.003, packet-loss smear 0.004-0.05 (docs/degradations.md).
                   Measured on the source-resolution luma (``luma_native``), or on the frame
                   when it is at source resolution; nan otherwise (the grid is resampled away).
``luma_mean``      average picture level: mean luma 0..1 (full range).
``clipped_highlights``  fraction of pixels whose luma is at or above ``clip_high_threshold``
                   (0.98 of full scale, i.e. at nominal white, where a washed-out or
                   over-exposed picture piles up). Clean footage 0-0.09 (a white bird in
                   daylight), over-exposure 0.08-0.35.
``noise_native``, ``edge_width``, ``white_level``  resolution-aware measures for the
                   gross-damage rules: noise sigma at the source resolution, the width of the
                   sharpest edges in px at 640 wide, the 99.9th percentile of luma
                   (:mod:`monitor.picture_measures`).
``letterbox``      fraction of rows that are black bars at the top plus the bottom (0..1).
``pillarbox``      fraction of columns that are black bars at the left plus the right.
                   Both are 0 for a wholly black picture (that is ``black``'s job).

Still scene or frozen feed?
---------------------------
A frozen feed keeps delivering frames with *new* timestamps but an identical picture; a
stall delivers no frames at all (``TimingDetectors``' ``stall_seconds``). A live camera
looking at a still scene is not frozen, because its sensor noise (and the encoder's
periodic intra refresh) changes every frame: Gaussian sensor noise of sigma ``s`` levels
gives an MAFD of about ``1.13*s/255`` between frames, i.e. -47 dB for ``s = 1``, well above
-60 dB, while re-sent identical pictures give -inf dB (floored at -120). So the heuristic is:
*near-identical picture (<= -60 dB, the FFmpeg default) while pts keeps advancing = frozen*;
identical picture with a pts that did not advance = the same frame delivered again, which
is neither frozen nor new evidence. As in FFmpeg, each frame is compared with the first
frame of the candidate freeze (the reference), not only with the previous sample, so a
slow drift cannot hide inside the tolerance. A stricter set-up for very clean, heavily
compressed static scenes (skip-coded areas can decode bit-identically): lower
``freeze_noise_db`` to e.g. -90 so that only (almost) bit-identical pictures count.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from monitor.picture_measures import MEASURE_KEYS, measure

__all__ = [
    "DetectorSettings",
    "FrameDetectors",
    "TimingDetectors",
    "FRAME_KEYS",
    "TIMING_KEYS",
    "luma",
    "black_fraction",
    "mafd_db",
    "blockiness",
    "blur_effect",
    "macroblock_edge_breaks",
    "estimate_noise_sigma",
    "black_bars",
]

FRAME_KEYS = (
    "black",
    "black_seconds",
    "freeze_db",
    "frozen",
    "freeze_seconds",
    "blockiness",
    "blur",
    "noise_sigma",
    "letterbox",
    "pillarbox",
    "mb_edge_breaks",
    "luma_mean",
    "clipped_highlights",
    *MEASURE_KEYS,
)
TIMING_KEYS = ("stall_seconds", "fps", "fps_ratio", "pts_jumps", "pts_jump_max_seconds", "decode_errors")

BLOCKINESS_FLAT_BLOCKS = 10.0  # blockiness of blocks flat inside with steps between them (cap)

_LUMA_COEFFS = {
    "bt601": (0.299, 0.587, 0.114),
    "bt709": (0.2126, 0.7152, 0.0722),
}


class DetectorSettings(BaseModel):
    """Detector thresholds and parameters; defaults follow FFmpeg's filters where one exists."""

    model_config = ConfigDict(extra="forbid")

    # -- black (FFmpeg blackdetect) --------------------------------------------------------
    black_pixel_threshold: float = Field(
        0.10, ge=0.0, le=1.0,
        description="Luma (0..1, full range) below which a pixel is black. FFmpeg blackdetect "
        "pix_th=0.10 (FFmpeg scales it into the limited 16-235 range of the Y plane; here the "
        "RGB frame is full range, so 0.10 of full scale is the same level).")
    black_ratio_threshold: float = Field(
        0.98, ge=0.0, le=1.0,
        description="Fraction of black pixels at or above which the picture is black. "
        "FFmpeg picture_black_ratio_th=0.98.")
    black_min_duration: float = Field(
        2.0, ge=0.0,
        description="Seconds the picture must stay black before it is reported (FFmpeg d=2.0). "
        "Applied by the alert rule 'black' (monitor.alerts.default_rules).")
    # -- freeze (FFmpeg freezedetect) ------------------------------------------------------
    freeze_noise_db: float = Field(
        -60.0, le=0.0,
        description="Change (20*log10 of the normalised luma mean absolute difference) at or "
        "below which two pictures are the same. FFmpeg freezedetect noise=-60dB (=0.001).")
    freeze_min_duration: float = Field(
        2.0, ge=0.0,
        description="Seconds a picture must stay frozen before it is reported (FFmpeg d=2). "
        "Applied by the alert rule 'frozen'.")
    freeze_require_pts_advance: bool = Field(
        True,
        description="Count a sample as frozen only if its timestamp advanced: a frozen feed "
        "sends new timestamps with an identical picture.")
    freeze_db_floor: float = Field(
        -120.0, le=-60.0, description="freeze_db reported for identical pictures (instead of -inf).")
    # -- blockiness --------------------------------------------------------------------------
    block_size: int = Field(8, ge=2, description="Codec block size in source pixels (JPEG/MPEG: 8).")
    blockiness_min_period: float = Field(
        3.5, ge=2.0,
        description="Smallest block period in *sampled-frame* pixels that is still measured; "
        "when the frame is downscaled so much that the grid is finer than this, the direction "
        "is skipped (both skipped -> nan).")
    # -- macroblock damage (packet loss) ----------------------------------------------------
    macroblock_size: int = Field(
        16, ge=4, description="Macroblock size in source pixels (H.264/MPEG-2: 16); loss and "
        "concealment replace whole macroblocks.")
    mb_edge_ratio: float = Field(
        3.0, gt=1.0, description="A macroblock edge is broken when the step across it exceeds "
        "this many times the larger step on either side of it (plus mb_edge_min_step).")
    mb_edge_min_step: float = Field(
        4.0, ge=0.0, description="... plus this many 8-bit levels per pixel along the edge, so "
        "faint steps in flat areas (ordinary compression) do not count.")
    mb_edge_min_texture: float = Field(
        0.5, ge=0.0, description="... and only where the picture varies along the edge by at least "
        "this many levels per pixel on one side of it: a flat graphic's edges that happen to lie "
        "on the grid (a lower-third bar) are not damage.")
    # -- exposure ----------------------------------------------------------------------------
    clip_high_threshold: float = Field(
        0.98, gt=0.0, le=1.0,
        description="Luma (0..1, full range) at or above which a pixel counts as clipped white "
        "(swscale maps limited-range Y 235, nominal white, to 1.0).")
    # -- blur --------------------------------------------------------------------------------
    blur_kernel: int = Field(
        11, ge=3, description="Re-blur box size (pixels) of the Crete-Roffet blur measure "
        "(skimage blur_effect h_size=11).")
    # -- noise -------------------------------------------------------------------------------
    noise_exclude_saturated: bool = Field(
        True, description="Ignore pixels next to clipped values (<=2 or >=253): clipping hides noise.")
    # -- letterbox / pillarbox -----------------------------------------------------------------
    bar_black_ratio: float = Field(
        0.98, ge=0.0, le=1.0,
        description="A row (column) is part of a black bar when at least this fraction of its "
        "pixels is below black_pixel_threshold.")
    # -- general -------------------------------------------------------------------------------
    luma_coefficients: Literal["bt601", "bt709"] = Field(
        "bt601", description="RGB -> luma weights (swscale's default conversion is BT.601).")
    # -- timing ------------------------------------------------------------------------------
    fps_window: float = Field(5.0, gt=0.0, description="Seconds of frame arrivals used to measure fps.")
    pts_jump_min_seconds: float = Field(
        1.0, gt=0.0, description="A forward pts step larger than this (and larger than "
        "pts_jump_factor frame intervals) is a discontinuity; any backward step is one.")
    pts_jump_factor: float = Field(
        4.0, gt=1.0, description="Forward steps above this many nominal frame intervals may be jumps.")
    pts_jump_window: float = Field(
        60.0, gt=0.0, description="pts_jumps counts the discontinuities of the last this-many seconds.")
    decode_error_window: float = Field(
        10.0, gt=0.0, description="decode_errors counts the undecodable packets and corrupt "
        "frames of the last this-many seconds.")


# ----------------------------------------------------------------------------------------------
# stateless building blocks
# ----------------------------------------------------------------------------------------------

def _check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(frame_rgb)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 RGB frame, got shape {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"frame too small: {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {a.dtype}")
    return a[..., :3]


def luma(frame_rgb: np.ndarray, coefficients: str = "bt601") -> np.ndarray:
    """Full-range luma of a uint8 RGB frame as float32 in 0..1."""
    r, g, b = _LUMA_COEFFS[coefficients]
    f = frame_rgb.astype(np.float32)
    y = f[..., 0] * np.float32(r / 255.0)
    y += f[..., 1] * np.float32(g / 255.0)
    y += f[..., 2] * np.float32(b / 255.0)
    return y


def black_fraction(y: np.ndarray, pixel_threshold: float = 0.10) -> float:
    """Fraction of pixels of luma ``y`` (0..1) below ``pixel_threshold``."""
    return float(np.count_nonzero(y < pixel_threshold)) / y.size


def mafd_db(y: np.ndarray, ref: np.ndarray, floor_db: float = -120.0) -> float:
    """``20*log10`` of the mean absolute difference of two 0..1 luma planes, floored."""
    mafd = float(np.mean(np.abs(y - ref), dtype=np.float64))
    floor = 10.0 ** (floor_db / 20.0)
    return 20.0 * math.log10(max(mafd, floor))


def _grid_ratio(profile: np.ndarray, period: float) -> tuple[float, float] | None:
    """(boundary mean, inner mean) of a 1-D gradient profile over a block grid of ``period``.

    ``profile[i]`` is the gradient between samples ``i`` and ``i+1``, i.e. at edge position
    ``i+1``; grid lines lie at multiples of ``period`` (edge coordinates), which is where a
    codec grid at multiples of ``block_size`` ends up after an edge-aligned resize.
    """
    pos = np.arange(1, profile.size + 1, dtype=np.float64)
    phase = np.mod(pos, period)
    dist = np.minimum(phase, period - phase)  # distance to the nearest grid line
    boundary = dist < 0.5
    # leave the two positions next to a line out of "inner": ringing, deblocking and the
    # resampling kernel spread a block edge over them
    inner = dist >= (1.5 if period >= 6.0 else 1.0)
    if not boundary.any() or not inner.any():
        return None
    return _trimmed_mean(profile[boundary]), _trimmed_mean(profile[inner])


def _trimmed_mean(a: np.ndarray, keep: float = 0.9) -> float:
    """Mean of the lowest ``keep`` share of ``a``: the few grid lines that a flat graphic's
    hard edges (a lower-third bar on a multiple of 8) happen to fall on do not count, a
    codec's block edges on most lines do."""
    n = max(1, int(math.ceil(keep * a.size)))
    return float(np.partition(a, n - 1)[:n].mean()) if n < a.size else float(a.mean())


def blockiness(
    y: np.ndarray,
    block_size: int = 8,
    scale: tuple[float, float] = (1.0, 1.0),
    min_period: float = 3.5,
) -> float:
    """Block-boundary discontinuity ratio of luma ``y``; ~1 clean, >1 blocky, nan if unmeasurable.

    ``scale`` = (sampled width / source width, sampled height / source height): the codec grid
    of ``block_size`` source pixels has a period of ``block_size*scale`` sampled pixels.
    Horizontal and vertical discontinuities are pooled (sum of boundary means over sum of
    inner means of the directions whose period is at least ``min_period``); each mean leaves
    out the strongest 10 % of its lines (graphics edges that fall on the grid).
    """
    num = 0.0
    den = 0.0
    px = block_size * scale[0]
    py = block_size * scale[1]
    if px >= min_period and y.shape[1] > 2 * px:
        prof = np.abs(np.diff(y, axis=1)).mean(axis=0)
        r = _grid_ratio(prof, px)
        if r is not None:
            num += r[0]
            den += r[1]
    if py >= min_period and y.shape[0] > 2 * py:
        prof = np.abs(np.diff(y, axis=0)).mean(axis=1)
        r = _grid_ratio(prof, py)
        if r is not None:
            num += r[0]
            den += r[1]
    if den <= 1e-6:
        # flat inside the blocks: a flat picture (or no measurable direction) has no grid to
        # see, one with steps of a level or more on the grid lines only is pixelated, as blocky
        # as it gets (a near-black frame of a fade, with faint steps, is not)
        level = 1.0 if np.issubdtype(y.dtype, np.integer) or float(np.max(y)) > 1.5 else 1.0 / 255.0
        return BLOCKINESS_FLAT_BLOCKS if num >= level else float("nan")
    return min(num / den, BLOCKINESS_FLAT_BLOCKS)


def macroblock_edge_breaks(y8: np.ndarray, block: int = 16, ratio: float = 3.0,
                           min_step: float = 4.0, min_texture: float = 0.0) -> float:
    """Fraction of ``block``-pixel edges of the block grid of luma ``y8`` (8-bit levels) that are broken.

    An edge segment (``block`` pixels long, on a grid line at a multiple of ``block``) is
    broken when ``sum|step across| > ratio * sum max(|step before|, |step after|) +
    min_step * block``: a discontinuity much stronger than the picture's own gradients on
    either side, as where a concealed or misplaced macroblock meets an intact one. Content
    edges rarely qualify: they are as steep one pixel off the grid line as on it, and only
    one grid line in ``block`` can hold them, except a flat graphic's, which ``min_texture``
    (levels per pixel of variation along the edge, on at least one side) leaves out. nan
    when the picture is smaller than 3 blocks.
    """
    y = np.asarray(y8)
    y = y.astype(np.int16) if y.dtype == np.uint8 else np.asarray(y, dtype=np.float32)
    h, w = y.shape
    if h < 3 * block or w < 3 * block:
        return float("nan")
    broken = 0
    total = 0
    for a in (y, y.T):  # vertical grid lines, then horizontal ones (as columns of the transpose)
        rows, cols = a.shape
        xs = np.arange(block, cols - 1, block)
        across = np.abs(a[:, xs] - a[:, xs - 1])
        beside = np.maximum(np.abs(a[:, xs - 1] - a[:, xs - 2]), np.abs(a[:, xs + 1] - a[:, xs]))
        n = rows // block
        across = across[:n * block].reshape(n, block, -1).sum(axis=1, dtype=np.float32)
        beside = beside[:n * block].reshape(n, block, -1).sum(axis=1, dtype=np.float32)
        broken_here = across > ratio * beside + min_step * block
        if min_texture > 0:
            # variation along the edge, on its either side: a flat graphic meeting another
            # flat colour on the grid has none; damage meets the picture's texture on one side
            along = [np.abs(np.diff(a[:n * block, c], axis=0, append=a[n * block - 1:n * block, c]))
                     .reshape(n, block, -1).sum(axis=1, dtype=np.float32) for c in (xs - 1, xs)]
            broken_here &= np.maximum(along[0], along[1]) >= min_texture * block
        broken += int(np.count_nonzero(broken_here))
        total += across.size
    return broken / total


def _sobel_valid(y: np.ndarray, axis: int) -> np.ndarray:
    """|Sobel| derivative along ``axis`` on the interior (valid region, shape -2 each way)."""
    if axis == 0:
        d = y[2:, :] - y[:-2, :]
        return np.abs(d[:, :-2] + 2.0 * d[:, 1:-1] + d[:, 2:])
    d = y[:, 2:] - y[:, :-2]
    return np.abs(d[:-2, :] + 2.0 * d[1:-1, :] + d[2:, :])


def blur_effect(y: np.ndarray, h_size: int = 11) -> float:
    """Crete-Roffet no-reference blur of luma ``y``: 0 sharp .. 1 blurred (nan on flat pictures).

    Re-blurs the picture with a ``h_size`` box along each axis and measures how much of the
    directional (Sobel) variation survives; a picture that is already blurry loses little.
    Same definition as ``skimage.measure.blur_effect`` (max over the two axes; the border
    pixels are left out).
    """
    y = np.asarray(y, dtype=np.float32)
    if min(y.shape) < 5:
        return float("nan")
    out = []
    for axis in (0, 1):
        sharp = _sobel_valid(y, axis)
        blurred = _sobel_valid(ndimage.uniform_filter1d(y, h_size, axis=axis), axis)
        m1 = float(sharp.sum(dtype=np.float64))
        if m1 <= 1e-4 * sharp.size:  # flat picture: nothing to blur
            return float("nan")
        np.subtract(sharp, blurred, out=blurred)
        np.maximum(blurred, 0.0, out=blurred)
        m2 = float(blurred.sum(dtype=np.float64))
        out.append(abs(m1 - m2) / m1)
    return max(out)


# Immerkaer's noise mask N = [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of two second
# differences [1,-2,1]; it cancels smooth image structure (up to second order) and passes white
# noise with a gain of sqrt(sum(N**2)) = 6.
_MAD_TO_SIGMA = 1.0 / (0.6744897501960817 * 6.0)
_NOISE_MAX_SAMPLES = 1 << 17


def estimate_noise_sigma(frame_rgb: np.ndarray, exclude_saturated: bool = True) -> float:
    """Noise sigma in 8-bit levels: robust Immerkaer estimate, mean over R, G and B.

    Immerkaer (1996, "Fast noise variance estimation") convolves with the mask ``N`` above and
    averages ``|I*N|``; here the *median* of ``|I*N|`` is used instead of the mean
    (``sigma = median/(0.6745*6)``), which keeps edges and texture -- a minority of the pixels
    -- from inflating the estimate. Pixels next to clipped values (<=2, >=253) are ignored,
    because clipping removes noise. Each colour channel is estimated separately and the three
    are averaged, so noise added per channel and noise added to all channels alike read the
    same. On large frames the median is taken over a regular subsample of the responses.
    """
    a = _check_frame(frame_rgb)
    if min(a.shape[:2]) < 3:
        return float("nan")
    f = a.astype(np.float32)
    d = f[:, :-2] - 2.0 * f[:, 1:-1] + f[:, 2:]
    resp = np.abs(d[:-2] - 2.0 * d[1:-1] + d[2:])  # (H-2, W-2, 3)
    step = 1
    while resp.shape[0] * resp.shape[1] / (step * step) > _NOISE_MAX_SAMPLES:
        step += 1
    resp = resp[::step, ::step]
    valid = None
    if exclude_saturated:
        clipped = (a <= 2) | (a >= 253)
        if clipped.any():
            near = np.zeros(resp.shape, dtype=bool)
            for dy in range(3):
                for dx in range(3):
                    near |= clipped[dy:dy + clipped.shape[0] - 2, dx:dx + clipped.shape[1] - 2][::step, ::step]
            valid = ~near
    sigmas = []
    for c in range(3):
        r = resp[..., c]
        r = r[valid[..., c]] if valid is not None else r.ravel()
        if r.size < 64:
            continue
        sigmas.append(float(np.median(r)) * _MAD_TO_SIGMA)
    if not sigmas:
        return float("nan")
    return float(np.mean(sigmas))


def black_bars(y: np.ndarray, pixel_threshold: float = 0.10, line_ratio: float = 0.98) -> tuple[float, float]:
    """(letterbox, pillarbox): fraction of rows in black bars top+bottom, columns left+right.

    A bar is a run of lines from the edge inward in which at least ``line_ratio`` of the pixels
    are below ``pixel_threshold``. A wholly black picture has no bars (0, 0).
    """
    dark = y < pixel_threshold
    rows = dark.mean(axis=1) >= line_ratio
    cols = dark.mean(axis=0) >= line_ratio
    if rows.all() or cols.all():
        return 0.0, 0.0

    def edge_runs(flags: np.ndarray) -> int:
        first = int(np.argmin(flags))  # first non-bar line from the start
        last = int(np.argmin(flags[::-1]))  # ... from the end
        return first + last

    return edge_runs(rows) / rows.size, edge_runs(cols) / cols.size


# ----------------------------------------------------------------------------------------------
# per-stream state
# ----------------------------------------------------------------------------------------------

class FrameDetectors:
    """Picture detectors for one stream; keeps the freeze reference and black/freeze runs.

    ``source_size`` (width, height) of the decoded picture before the monitor downscaled it
    for sampling: needed only by blockiness, which must know where the codec's block grid
    lies in the sampled frame. Without it the frame is taken to be at source resolution.
    Grids finer than ``blockiness_min_period`` sampled pixels (e.g. 1280 wide scaled to
    384: 2.4 px) cannot be measured, and even a 4 px grid (720p at 640 wide) reads weaker
    than the codec's own; the stream worker therefore passes the decoded luma plane
    (``luma_native``) and the block measures run on that.
    """

    def __init__(self, settings: DetectorSettings | None = None,
                 source_size: tuple[int, int] | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.source_size = source_size
        self.reset()

    def reset(self) -> None:
        """Forget the previous picture (e.g. after a reconnect)."""
        self._ref: np.ndarray | None = None  # freeze reference luma
        self._ref_t: float | None = None
        self._last_t: float | None = None
        self._black_since: float | None = None

    def update(self, frame_rgb: np.ndarray, pts: float | None, wall_time: float,
               source_size: tuple[int, int] | None = None,
               luma_native: np.ndarray | None = None) -> dict[str, float]:
        """All picture detector values for one sampled frame (keys: ``FRAME_KEYS``).

        ``pts`` in seconds on the stream's clock (None when unknown: wall time is used);
        ``source_size`` overrides the constructor's for this frame. ``luma_native``: the
        decoded picture's luma plane (``H x W``, 8-bit levels, limited or full range) at
        source resolution; when given, blockiness and mb_edge_breaks use it, so the codec's
        block grid is intact whatever size ``frame_rgb`` was scaled to.
        """
        s = self.settings
        a = _check_frame(frame_rgb)
        y = luma(a, s.luma_coefficients)
        t = float(pts) if pts is not None else float(wall_time)
        out: dict[str, float] = {}

        # -- black ---------------------------------------------------------------------------
        bf = black_fraction(y, s.black_pixel_threshold)
        out["black"] = bf
        if bf >= s.black_ratio_threshold:
            if self._black_since is None or (self._last_t is not None and t < self._last_t):
                self._black_since = t
            out["black_seconds"] = max(0.0, t - self._black_since)
        else:
            self._black_since = None
            out["black_seconds"] = 0.0

        # -- freeze ----------------------------------------------------------------------------
        fz = self._freeze(y, t)
        if bf >= s.black_ratio_threshold:
            # a black picture repeated is "black", not also "frozen" (one cause, one alert)
            fz["frozen"] = 0.0
            fz["freeze_seconds"] = 0.0
        out.update(fz)
        self._last_t = t

        # -- block grid: blockiness, macroblock damage ----------------------------------------------
        if luma_native is not None:
            yn = np.asarray(luma_native)
            if yn.ndim != 2:
                raise ValueError(f"luma_native must be a 2-D plane, got shape {yn.shape}")
            # int16 differences: a fifth of the float32 cost on a 1080p plane
            out["blockiness"] = blockiness(yn.astype(np.int16), s.block_size, (1.0, 1.0),
                                           s.blockiness_min_period)
            out["mb_edge_breaks"] = macroblock_edge_breaks(yn, s.macroblock_size, s.mb_edge_ratio,
                                                           s.mb_edge_min_step, s.mb_edge_min_texture)
        else:
            src = source_size or self.source_size
            if src:
                scale = (a.shape[1] / float(src[0]), a.shape[0] / float(src[1]))
            else:
                scale = (1.0, 1.0)
            out["blockiness"] = blockiness(y, s.block_size, scale, s.blockiness_min_period)
            # the macroblock grid survives only an (almost) unscaled frame
            at_source = abs(scale[0] - 1.0) < 0.01 and abs(scale[1] - 1.0) < 0.01
            out["mb_edge_breaks"] = macroblock_edge_breaks(y * 255.0, s.macroblock_size, s.mb_edge_ratio,
                                                           s.mb_edge_min_step, s.mb_edge_min_texture) if at_source else float("nan")

        # -- exposure ---------------------------------------------------------------------------------
        out["luma_mean"] = float(y.mean(dtype=np.float64))
        out["clipped_highlights"] = float(np.count_nonzero(y >= s.clip_high_threshold)) / y.size

        # -- blur, noise, bars ----------------------------------------------------------------------
        out["blur"] = blur_effect(y, s.blur_kernel)
        out["noise_sigma"] = estimate_noise_sigma(a, s.noise_exclude_saturated)
        lb, pb = black_bars(y, s.black_pixel_threshold, s.bar_black_ratio)
        out["letterbox"] = lb
        out["pillarbox"] = pb
        # -- resolution-aware measures for the gross-damage rules (monitor.picture_measures) ---------
        src = source_size or self.source_size
        down = float(src[0]) / a.shape[1] if src else 1.0
        out.update(measure(y, luma_native, down))
        return out

    def _freeze(self, y: np.ndarray, t: float) -> dict[str, float]:
        s = self.settings
        nan = float("nan")
        if self._ref is None or self._ref.shape != y.shape or self._last_t is None or t < self._last_t:
            # first frame, new resolution, or the clock went backwards (discontinuity): restart
            self._ref, self._ref_t = y, t
            return {"freeze_db": nan, "frozen": 0.0, "freeze_seconds": 0.0}
        db = mafd_db(y, self._ref, s.freeze_db_floor)
        advanced = t > self._last_t
        if db <= s.freeze_noise_db:
            if advanced or not s.freeze_require_pts_advance:
                # same picture, new timestamp: frozen (keep the reference: FFmpeg measures
                # against the first frame of the freeze)
                return {"freeze_db": db, "frozen": 1.0, "freeze_seconds": max(0.0, t - self._ref_t)}
            # same picture, same timestamp: the same frame delivered again -- no evidence
            return {"freeze_db": db, "frozen": 0.0, "freeze_seconds": 0.0}
        self._ref, self._ref_t = y, t
        return {"freeze_db": db, "frozen": 0.0, "freeze_seconds": 0.0}


class TimingDetectors:
    """Stall, frame rate and PTS continuity of one stream, from decoded-frame timestamps.

    Call :meth:`on_frame` for every decoded frame (then ``fps`` is the stream's delivered
    frame rate; calling it only for sampled frames measures the sampling rate instead) and
    :meth:`values` whenever the monitor publishes, also while no frames arrive, so a stall
    keeps growing. ``nominal_fps`` is the stream's advertised rate (PyAV
    ``stream.average_rate``); without it the median pts step of the first frames is used.
    The PTS given to :meth:`on_frame` is the media's own, as decoded: a splice in a file
    (``cat a.ts a.ts``) steps back and is a jump; where the caller itself starts the media
    over (the monitor looping a file) it says so with :meth:`restart_pts`.

    Keys of :meth:`values` (``TIMING_KEYS``):
    ``stall_seconds``  now minus the wall time of the last frame (since construction when no
                       frame arrived yet; nan if ``start_time`` was not given either).
    ``fps``            frames received per wall-clock second over the last ``fps_window`` s.
    ``fps_ratio``      ``fps / nominal_fps`` (nan while the nominal rate is unknown); 1 = fine.
    ``pts_jumps``      PTS discontinuities in the last ``pts_jump_window`` s: a backward step,
                       or a forward step over ``max(pts_jump_min_seconds, pts_jump_factor *
                       nominal interval)``.
    ``pts_jump_max_seconds``  largest |step| among those discontinuities (0 if none).
    ``decode_errors``  packets the decoder rejected plus frames it flagged corrupt
                       (:meth:`on_decode_error`) in the last ``decode_error_window`` s. Errors
                       before the first decoded frame are ignored: joining a live stream
                       between key frames always costs a few undecodable packets.
    """

    _EST_FRAMES = 25

    def __init__(self, nominal_fps: float | None = None, settings: DetectorSettings | None = None,
                 start_time: float | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.nominal_fps = float(nominal_fps) if nominal_fps and nominal_fps > 0 else None
        self._start = start_time
        self._last_wall: float | None = None
        self._first_wall: float | None = None
        self._last_pts: float | None = None
        self._arrivals: deque[float] = deque()
        self._jumps: deque[tuple[float, float]] = deque()  # (wall time, step seconds)
        self._errors: deque[float] = deque()  # wall times of decode errors
        self._steps: list[float] = []  # first pts steps, to estimate the rate
        self.frames_total = 0
        self.pts_jumps_total = 0
        self.decode_errors_total = 0

    def _interval(self) -> float | None:
        if self.nominal_fps:
            return 1.0 / self.nominal_fps
        if len(self._steps) >= 5:
            med = float(np.median(self._steps))
            return med if med > 0 else None
        return None

    def on_frame(self, pts: float | None, wall_time: float) -> None:
        s = self.settings
        self.frames_total += 1
        self._last_wall = float(wall_time)
        if self._first_wall is None:
            self._first_wall = float(wall_time)
        self._arrivals.append(float(wall_time))
        if pts is not None:
            pts = float(pts)
            if self._last_pts is not None:
                step = pts - self._last_pts
                interval = self._interval()
                fwd_limit = max(s.pts_jump_min_seconds, s.pts_jump_factor * interval) if interval \
                    else s.pts_jump_min_seconds
                if step < 0 or step > fwd_limit:
                    self._jumps.append((float(wall_time), step))
                    self.pts_jumps_total += 1
                elif self.nominal_fps is None and len(self._steps) < self._EST_FRAMES and step > 0:
                    self._steps.append(step)
            self._last_pts = pts
        self._prune(float(wall_time))

    def restart_pts(self) -> None:
        """The source starts over on purpose (the monitor reopened a looped file): the next
        frame's PTS begins a new sequence instead of counting as a jump back."""
        self._last_pts = None

    def on_decode_error(self, wall_time: float) -> None:
        """A packet the decoder rejected, or a frame it decoded with errors (concealed)."""
        if self._last_wall is None:
            return
        self.decode_errors_total += 1
        self._errors.append(float(wall_time))
        self._prune(float(wall_time))

    def _prune(self, now: float) -> None:
        s = self.settings
        while self._errors and self._errors[0] <= now - s.decode_error_window:
            self._errors.popleft()
        while self._arrivals and self._arrivals[0] <= now - s.fps_window:
            self._arrivals.popleft()
        while self._jumps and self._jumps[0][0] <= now - s.pts_jump_window:
            self._jumps.popleft()

    def values(self, now: float) -> dict[str, float]:
        s = self.settings
        self._prune(now)
        nan = float("nan")
        ref = self._last_wall if self._last_wall is not None else self._start
        stall = max(0.0, now - ref) if ref is not None else nan
        # fps over the window; while the stream is younger than the window, over its age
        origin = self._start if self._start is not None else self._first_wall
        fps = nan
        if origin is not None:
            age = now - origin
            if age >= s.fps_window:
                fps = len(self._arrivals) / s.fps_window
            elif age > 0:
                # without start_time the origin is the first frame itself: count intervals
                n = len(self._arrivals) - (0 if self._start is not None else 1)
                fps = max(n, 0) / age
        interval = self._interval()
        nominal = self.nominal_fps or (1.0 / interval if interval else None)
        return {
            "stall_seconds": stall,
            "fps": fps,
            "fps_ratio": fps / nominal if nominal and fps == fps else nan,
            "pts_jumps": float(len(self._jumps)),
            "pts_jump_max_seconds": max((abs(j[1]) for j in self._jumps), default=0.0),
            "decode_errors": float(len(self._errors)),
        }
