"""Synthetic distortions for pre-training: the 25 KADID-10k types and six video artefacts, 5 levels each.

Every distortion is a function ``fn(img, level, rng) -> img``:

* ``img``: ``uint8`` array ``(H, W, 3)``, RGB, any size (odd sizes included, >= 8x8 px).
* ``level``: ``1`` (mild, already visible) .. ``5`` (severe).
* ``rng``: ``numpy.random.Generator``; the only source of randomness, so a fixed seed gives the
  same output.
* returns a new ``uint8`` array of the same shape.

Severity grows with level.  To make that hold image by image (not only on average), every
function draws *the same random numbers in the same order whatever the level* and only scales
how they are used: noise fields are one standard-normal draw times a level amplitude, impulse
noise hits the pixels whose uniform draw falls below the level density (so level 4's pixels
include level 3's), patch/block lists are one list whose first ``n(level)`` entries are used,
and so on.  So ``fn(img, 2, default_rng(s))`` is "more of" ``fn(img, 1, default_rng(s))``;
``pseudolabels.build_pretrain_set`` relies on it for ranking pairs.

The level parameters are not KADID's MATLAB values verbatim: KADID's first level is sometimes
a no-op (Gaussian sigma 0.1, saturation factor 1) and a few of its types mix directions across
levels (contrast change).  They were re-spaced so that level 1 is visible and the full-reference
error rises at every step on 384-512 px images (``tests/test_distortions.py`` checks it for
every type on several images).  Pixel-sized parameters (blur radii, shifts, patch sizes) are in
pixels of the image passed in and were set for 384-512 px content, the size the models train at.

Implementation notes:

* JPEG 2000 is real JPEG 2000 (Pillow's OpenJPEG codec, rate-controlled by compression ratio).
* ``h264``/``hevc`` encode a 3-frame clip through PyAV (libx264 / libx265, ``yuv420p``): two
  frames of the image shifted by a small random global motion, then the image itself, and
  return the decoded last (inter-predicted) frame.  The encoders run at a constant quantiser
  rising with level (so the bitrate falls with level) rather than at a target bitrate: x264/x265
  rate control does not settle within 3 frames, and a bitrate target would make the damage
  depend on image size and content in a way that breaks the level ordering.  Encoders run
  single-threaded (their output depends on the thread count), and PyAV is imported only when a
  codec type is used, so the rest of the library works without it.
* ``denoise`` is noise followed by an adaptive Wiener filter (MATLAB ``wiener2``; KADID used
  DnCNN, not available here): smoothing in flat areas, residual noise on texture.
* ``mean_shift`` and ``contrast_change`` pick a direction (up/down) from ``rng``; the level sets
  the magnitude.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, signal
from skimage import color as skcolor

__all__ = [
    "DISTORTIONS",
    "KADID_TYPES",
    "VIDEO_TYPES",
    "LEVELS",
    "Distortion",
    "apply",
]

LEVELS = (1, 2, 3, 4, 5)
MIN_SIDE = 8

DistortionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Distortion:
    """One registered distortion type."""

    name: str
    family: str  # blur, color, compression, noise, brightness, spatial, sharpness_contrast, video
    fn: DistortionFn
    params: tuple  # the per-level parameter (index 0 = level 1), for documentation/model cards
    kadid: bool  # one of the 25 KADID-10k types (False: an addition for video and cameras)
    description: str = ""

    def __call__(self, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        return apply(self.name, img, level, rng)


# --------------------------------------------------------------------------------------------
# helpers


def _check(img: np.ndarray, level: int) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected a uint8 (H, W, 3) RGB array")
    if min(img.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image smaller than {MIN_SIDE}x{MIN_SIDE}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _f32(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) * np.float32(1.0 / 255.0)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _lut(img: np.ndarray, curve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a curve on [0, 1] to every channel through a 256-entry table (fast)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    table = np.clip(np.rint(curve(x) * 255.0), 0, 255).astype(np.uint8)
    return table[img]


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate content by (dy, dx) pixels (positive = down/right), replicating edges."""
    h, w = a.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return a[ys[:, None], xs[None, :]]


def _convolve(f: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Same-size 2-D convolution of every channel of float (H, W, C) ``f`` with odd kernel ``k``."""
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    p = np.pad(f, ((ry, ry), (rx, rx), (0, 0)), mode="symmetric")
    return signal.fftconvolve(p, k[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))


def _gauss(f: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every channel; large sigmas go through the FFT (cost independent of sigma)."""
    if sigma <= 3.0:
        return ndimage.gaussian_filter(f, sigma=(sigma, sigma, 0), mode="reflect", truncate=3.5)
    r = int(np.ceil(3.5 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    k = np.outer(g, g)
    return _convolve(f, k / k.sum())


def _block_mean(f: np.ndarray, b: int) -> np.ndarray:
    """Replace each b x b block (grid at 0,0; partial blocks at the edges) by its mean."""
    h, w, c = f.shape
    hp, wp = -(-h // b) * b, -(-w // b) * b
    p = np.pad(f, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    # edge padding biases partial blocks towards the edge row; use true means with counts instead
    ones = np.zeros((hp, wp, 1), np.float32)
    ones[:h, :w] = 1.0
    p = p * ones
    s = p.reshape(hp // b, b, wp // b, b, c).sum(axis=(1, 3))
    n = ones.reshape(hp // b, b, wp // b, b, 1).sum(axis=(1, 3))
    m = s / n
    return np.repeat(np.repeat(m, b, axis=0), b, axis=1)[:h, :w]


def _lab(img: np.ndarray) -> np.ndarray:
    return skcolor.rgb2lab(_f32(img))


def _from_lab(lab: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _u8(skcolor.lab2rgb(lab))


def _rgb2ycc(f: np.ndarray) -> np.ndarray:
    """Full-range BT.601 Y, Cb, Cr (Cb/Cr centred on 0) from float RGB in [0, 1]."""
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, (b - y) / 1.772, (r - y) / 1.402], axis=-1)


def _ycc2rgb(ycc: np.ndarray) -> np.ndarray:
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def _gray(f: np.ndarray) -> np.ndarray:
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _scaled_count(base: tuple[int, ...], h: int, w: int, ref_area: float = 512 * 384) -> list[int]:
    """Per-level counts scaled by image area, at least 1 and strictly increasing."""
    out: list[int] = []
    for b in base:
        n = max(1, int(round(b * h * w / ref_area)))
        if out and n <= out[-1]:
            n = out[-1] + 1
        out.append(n)
    return out


# --------------------------------------------------------------------------------------------
# blur

GAUSSIAN_SIGMA = (0.6, 1.0, 1.6, 2.6, 4.2)
LENS_RADIUS = (1.0, 2.0, 3.5, 5.5, 8.0)
MOTION_LENGTH = (3.0, 5.0, 8.0, 12.0, 18.0)


def gaussian_blur(img, level, rng):
    return _u8(_gauss(_f32(img), GAUSSIAN_SIGMA[level - 1]))


def _disk_kernel(r: float) -> np.ndarray:
    R = int(np.ceil(r))
    y, x = np.mgrid[-R : R + 1, -R : R + 1]
    k = np.clip(r + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def lens_blur(img, level, rng):
    return _u8(_convolve(_f32(img), _disk_kernel(LENS_RADIUS[level - 1])))


def _line_kernel(length: float, angle: float) -> np.ndarray:
    half = length / 2.0
    R = int(np.ceil(half)) + 1
    k = np.zeros((2 * R + 1, 2 * R + 1), np.float64)
    t = np.linspace(-half, half, int(8 * length) + 1)
    xs, ys = t * np.cos(angle) + R, -t * np.sin(angle) + R
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), wgt)
    return (k / k.sum()).astype(np.float32)


def motion_blur(img, level, rng):
    angle = rng.uniform(0.0, np.pi)
    return _u8(_convolve(_f32(img), _line_kernel(MOTION_LENGTH[level - 1], angle)))


# --------------------------------------------------------------------------------------------
# colour

DIFFUSION_SIGMA = (1.5, 3.0, 5.0, 8.0, 12.0)
COLOR_SHIFT_PX = (1.0, 2.0, 4.0, 6.5, 10.0)
COLOR_QUANT_COLORS = (64, 32, 20, 12, 7)
DESATURATE_FACTOR = (0.6, 0.42, 0.27, 0.13, 0.0)
OVERSATURATE_FACTOR = (1.6, 2.2, 3.0, 4.2, 6.0)


def color_diffusion(img, level, rng):
    """Blur the chroma (a*, b* of CIELAB): colours bleed across edges."""
    lab = _lab(img)
    s = DIFFUSION_SIGMA[level - 1]
    lab[..., 1:] = _gauss(lab[..., 1:], s)
    return _from_lab(lab)


def color_shift(img, level, rng):
    """Misregister the green channel by a few pixels in a random direction."""
    angle = rng.uniform(0.0, 2 * np.pi)
    d = COLOR_SHIFT_PX[level - 1]
    dy, dx = int(round(d * np.sin(angle))), int(round(d * np.cos(angle)))
    out = img.copy()
    out[..., 1] = _shift(img[..., 1], dy, dx)
    return out


def color_quantization(img, level, rng):
    """Median-cut palette of N colours, no dithering (MATLAB rgb2ind-like)."""
    pil = Image.fromarray(img)
    h, w = img.shape[:2]
    # the palette comes from a fixed subsample (median cut on the full image costs ~200 ms);
    # every pixel is then mapped to its nearest palette colour
    small = pil.resize((min(w, 96), min(h, 96)), Image.Resampling.NEAREST)
    pal = small.quantize(colors=COLOR_QUANT_COLORS[level - 1], method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return np.asarray(pil.quantize(palette=pal, dither=Image.Dither.NONE).convert("RGB"))


def color_saturation_1(img, level, rng):
    """Desaturate in HSV: S *= f with H and V kept, i.e. each channel c -> V - f (V - c)."""
    f = _f32(img)
    v = np.maximum(np.maximum(f[..., 0], f[..., 1]), f[..., 2])[..., None]
    return _u8(v - np.float32(DESATURATE_FACTOR[level - 1]) * (v - f))


def color_saturation_2(img, level, rng):
    """Oversaturate in CIELAB: a*, b* scaled up, then clipped to the RGB gamut."""
    lab = _lab(img)
    lab[..., 1:] *= OVERSATURATE_FACTOR[level - 1]
    return _from_lab(lab)


# --------------------------------------------------------------------------------------------
# compression

JP2_RATIO = (30.0, 60.0, 110.0, 190.0, 300.0)
JPEG_QUALITY = (30, 18, 10, 6, 3)


def jpeg2000(img, level, rng):
    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf, format="JPEG2000", quality_mode="rates", quality_layers=[JP2_RATIO[level - 1]], irreversible=True
    )
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def jpeg(img, level, rng):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY[level - 1])
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------------
# noise

WHITE_NOISE_VAR = (0.001, 0.002, 0.0035, 0.006, 0.011)
CHROMA_NOISE_SIGMA = (0.025, 0.04, 0.06, 0.085, 0.12)
IMPULSE_DENSITY = (0.002, 0.006, 0.012, 0.024, 0.045)
SPECKLE_VAR = (0.003, 0.008, 0.016, 0.03, 0.055)
DENOISE_NOISE_VAR = (0.0015, 0.003, 0.005, 0.009, 0.016)


def white_noise(img, level, rng):
    n = rng.standard_normal(img.shape, dtype=np.float32)
    return _u8(_f32(img) + np.float32(np.sqrt(WHITE_NOISE_VAR[level - 1])) * n)


def white_noise_color(img, level, rng):
    """White noise in the colour components (Cb, Cr of full-range YCbCr); luma untouched."""
    n = rng.standard_normal(img.shape[:2] + (2,), dtype=np.float32)
    ycc = _rgb2ycc(_f32(img))
    ycc[..., 1:] += np.float32(CHROMA_NOISE_SIGMA[level - 1]) * n
    return _u8(_ycc2rgb(ycc))


def impulse_noise(img, level, rng):
    """Salt and pepper per channel sample (as MATLAB imnoise on RGB)."""
    u = rng.random(img.shape, dtype=np.float32)
    salt = rng.random(img.shape, dtype=np.float32) < 0.5
    hit = u < IMPULSE_DENSITY[level - 1]
    out = img.copy()
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def multiplicative_noise(img, level, rng):
    """Speckle: x + n x with n ~ N(0, var)."""
    n = rng.standard_normal(img.shape, dtype=np.float32)
    f = _f32(img)
    return _u8(f + f * np.float32(np.sqrt(SPECKLE_VAR[level - 1])) * n)


def _wiener(f: np.ndarray, noise_var: float, size: int = 5) -> np.ndarray:
    mu = ndimage.uniform_filter(f, size=(size, size, 1), mode="reflect")
    s2 = ndimage.uniform_filter(f * f, size=(size, size, 1), mode="reflect") - mu * mu
    gain = np.maximum(s2 - noise_var, 0.0) / np.maximum(s2, noise_var)
    return mu + gain * (f - mu)


def denoise(img, level, rng):
    """White noise, then an adaptive Wiener filter that knows the noise power."""
    v = DENOISE_NOISE_VAR[level - 1]
    n = rng.standard_normal(img.shape, dtype=np.float32)
    noisy = np.clip(_f32(img) + np.float32(np.sqrt(v)) * n, 0.0, 1.0)
    return _u8(_wiener(noisy, np.float32(v)))


# --------------------------------------------------------------------------------------------
# brightness

BRIGHTEN_GAMMA = (0.8, 0.66, 0.52, 0.4, 0.3)
DARKEN_GAMMA = (1.25, 1.55, 2.0, 2.6, 3.5)
MEAN_SHIFT = (0.04, 0.08, 0.12, 0.17, 0.23)


def brighten(img, level, rng):
    g = BRIGHTEN_GAMMA[level - 1]
    return _lut(img, lambda x: x**g)


def darken(img, level, rng):
    g = DARKEN_GAMMA[level - 1]
    return _lut(img, lambda x: x**g)


UNDEREXPOSURE_STOPS = (1.0, 2.0, 3.0, 4.0, 5.0)


def underexposure(img, level, rng):
    """Exposure lowered by whole stops in linear light (a camera whose auto-exposure failed)."""
    k = 2.0 ** -UNDEREXPOSURE_STOPS[level - 1]

    def curve(x):  # sRGB -> linear, scale, -> sRGB
        lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4) * k
        return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return _lut(img, curve)


def mean_shift(img, level, rng):
    """Add a constant to every channel; the sign is drawn from rng."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    d = sign * MEAN_SHIFT[level - 1]
    return _lut(img, lambda x: x + d)


# --------------------------------------------------------------------------------------------
# spatial

JITTER_STD_PX = (0.4, 0.8, 1.3, 2.0, 3.0)
NEP_COUNT = (20, 45, 90, 160, 260)  # patches at 512x384, scaled by area
PIXELATE_BLOCK = (2, 3, 4, 6, 9)
QUANT_LEVELS = (16, 11, 8, 6, 4)
COLOR_BLOCK_COUNT = (2, 4, 7, 11, 16)  # blocks at 512x384, scaled by area


def jitter(img, level, rng):
    """Each pixel fetched from a randomly displaced position (rounded Gaussian offsets)."""
    h, w = img.shape[:2]
    n = rng.standard_normal((2, h, w), dtype=np.float32) * np.float32(JITTER_STD_PX[level - 1])
    ys = np.clip(np.arange(h)[:, None] + np.rint(n[0]).astype(np.int64), 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + np.rint(n[1]).astype(np.int64), 0, w - 1)
    return img[ys, xs]


def _random_squares(img, divisor: int, base_counts: tuple[int, ...], rng):
    """Side, per-level counts (area-scaled) and top-left corners of random squares of side
    ``min(h, w) / divisor``; corners for the top level are drawn, lower levels use a prefix,
    so the levels nest."""
    h, w = img.shape[:2]
    side = min(max(4, int(round(min(h, w) / divisor))), h, w)
    counts = _scaled_count(base_counts, h, w)
    ys = rng.integers(0, h - side + 1, size=counts[-1])
    xs = rng.integers(0, w - side + 1, size=counts[-1])
    return side, counts, ys, xs


def non_eccentricity_patch(img, level, rng):
    """Small patches replaced by patches copied from nearby (offset) positions."""
    h, w = img.shape[:2]
    p, counts, ys, xs = _random_squares(img, 32, NEP_COUNT, rng)
    m = counts[-1]
    # offsets of 1..2 patch sizes in a random direction
    ang = rng.uniform(0, 2 * np.pi, size=m)
    rad = rng.uniform(1.0, 2.0, size=m) * p
    sy = np.clip(np.rint(ys + rad * np.sin(ang)).astype(int), 0, h - p)
    sx = np.clip(np.rint(xs + rad * np.cos(ang)).astype(int), 0, w - p)
    out = img.copy()
    for i in range(counts[level - 1]):
        out[ys[i] : ys[i] + p, xs[i] : xs[i] + p] = img[sy[i] : sy[i] + p, sx[i] : sx[i] + p]
    return out


def pixelate(img, level, rng):
    return _u8(_block_mean(_f32(img), PIXELATE_BLOCK[level - 1]))


def quantization(img, level, rng):
    """Uniform per-channel quantisation to N levels (reconstruction at the cell centres)."""
    n = QUANT_LEVELS[level - 1]
    return _lut(img, lambda x: (np.minimum(np.floor(x * n), n - 1) + 0.5) / n)


def color_block(img, level, rng):
    """Opaque square blocks of random colour at random positions."""
    s, counts, ys, xs = _random_squares(img, 12, COLOR_BLOCK_COUNT, rng)
    cols = rng.integers(0, 256, size=(counts[-1], 3)).astype(np.uint8)
    out = img.copy()
    for i in range(counts[level - 1]):
        out[ys[i] : ys[i] + s, xs[i] : xs[i] + s] = cols[i]
    return out


# --------------------------------------------------------------------------------------------
# sharpness and contrast

SHARPEN_AMOUNT = (0.8, 1.6, 2.6, 4.0, 6.0)
CONTRAST_DOWN = (0.78, 0.6, 0.45, 0.33, 0.22)
CONTRAST_UP = (1.3, 1.6, 2.0, 2.5, 3.1)


def high_sharpen(img, level, rng):
    """Unsharp mask (sigma 1.5 px) with a large amount: halos and clipped overshoot."""
    f = _f32(img)
    return _u8(f + SHARPEN_AMOUNT[level - 1] * (f - _gauss(f, 1.5)))


def contrast_change(img, level, rng):
    """Stretch or squash intensities about the image's mean grey; direction from rng."""
    up = rng.random() < 0.5
    k = (CONTRAST_UP if up else CONTRAST_DOWN)[level - 1]
    m = float(_gray(_f32(img)).mean())
    return _lut(img, lambda x: m + k * (x - m))


# --------------------------------------------------------------------------------------------
# video-specific

H264_QP = (32, 37, 42, 46, 51)
HEVC_QP = (34, 39, 43, 47, 51)
BLOCKING_ALPHA = (0.35, 0.55, 0.72, 0.86, 1.0)
BANDING_LEVELS = (40, 26, 16, 10, 6)
INTERLACE_SHIFT_PX = (1, 2, 4, 7, 11)
PACKET_LOSS_FRACTION = (0.03, 0.07, 0.13, 0.22, 0.35)  # of the frame's macroblocks


def _codec_roundtrip(img: np.ndarray, codec: str, options: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    import av  # here, so the rest of the library imports where PyAV is missing

    h, w = img.shape[:2]
    # yuv420p needs even sides and libx265 refuses pictures under 16 px: pad (edge) and crop back
    ph, pw = max(16, h + (h & 1)), max(16, w + (w & 1))
    src = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") if (ph, pw) != (h, w) else img
    ang = rng.uniform(0, 2 * np.pi)
    mv = (int(round(2 * np.sin(ang))), int(round(2 * np.cos(ang))))  # ~2 px/frame global motion
    n = 3
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        st = out.add_stream(codec, rate=25)
        st.width, st.height, st.pix_fmt = pw, ph, "yuv420p"
        st.options = options
        # one thread: x264/x265 output depends on the thread count, and the data must not
        # depend on the machine (data-loader workers parallelise anyway)
        st.codec_context.thread_count = 1
        for i in range(n):
            k = n - 1 - i
            frame = np.ascontiguousarray(_shift(src, k * mv[0], k * mv[1]))
            for pkt in st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    buf.seek(0)
    last = None
    with av.open(buf) as inp:
        for fr in inp.decode(video=0):
            last = fr
    if last is None:  # pragma: no cover - encoder produced nothing
        raise RuntimeError(f"{codec} round trip produced no frame")
    return np.ascontiguousarray(last.to_ndarray(format="rgb24")[:h, :w])


def h264(img, level, rng):
    """H.264 (libx264, preset veryfast, constant QP) of a 3-frame clip; decoded last frame."""
    return _codec_roundtrip(img, "libx264", {"preset": "veryfast", "qp": str(H264_QP[level - 1])}, rng)


def hevc(img, level, rng):
    """HEVC (libx265, preset veryfast, constant QP) of a 3-frame clip; decoded last frame."""
    params = f"qp={HEVC_QP[level - 1]}:log-level=none:pools=none:frame-threads=1"
    return _codec_roundtrip(img, "libx265", {"preset": "veryfast", "x265-params": params}, rng)


def blocking(img, level, rng):
    """8x8 blocks pulled towards their mean (DC): visible block edges, lost texture."""
    f = _f32(img)
    m = _block_mean(f, 8)
    a = np.float32(BLOCKING_ALPHA[level - 1])
    return _u8(m + (1 - a) * (f - m))


def banding(img, level, rng):
    """Bit-depth reduction where the image is smooth: contour bands in gradients (sky, walls).

    The smoothed image is quantised to N levels per channel and blended in with a mask that is
    1 in flat areas and falls to 0 where the local gradient is strong, as a codec that spends no
    bits on flat areas would produce; textured areas keep their detail.
    """
    f = _f32(img)
    s = _gauss(f, 2.0)
    g = _gray(s)
    gm = np.hypot(ndimage.sobel(g, axis=0), ndimage.sobel(g, axis=1)) / 8.0  # per-pixel slope
    mask = np.clip(1.0 - gm / 0.02, 0.0, 1.0)[..., None]
    n = BANDING_LEVELS[level - 1]
    q = np.rint(s * (n - 1)) / (n - 1)
    return _u8(mask * q + (1.0 - mask) * f)


def interlace(img, level, rng):
    """Combing: odd lines from a second field whose content moved horizontally by d pixels."""
    d = INTERLACE_SHIFT_PX[level - 1] * (1 if rng.random() < 0.5 else -1)
    out = img.copy()
    out[1::2] = _shift(img, 0, d)[1::2]
    return out


def packet_loss(img, level, rng):
    """A run of 16x16 macroblocks (raster order, as a lost slice) concealed badly.

    Concealment is either a vertical smear of the last good line above each lost macroblock,
    or stale content (the picture displaced by a few pixels and slightly blurred, as a
    previous frame copied in); rng picks which, and where the run starts.
    """
    h, w = img.shape[:2]
    mb = 16
    rows, cols = -(-h // mb), -(-w // mb)
    total = rows * cols
    counts = [max(1, int(round(fr * total))) for fr in PACKET_LOSS_FRACTION]
    for i in range(1, len(counts)):
        counts[i] = max(counts[i], counts[i - 1] + 1)
    counts = [min(c, total) for c in counts]
    start = int(rng.integers(0, max(1, total - counts[-1] + 1)))
    smear = rng.random() < 0.5
    ang = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(6.0, 14.0)
    lost = np.zeros((rows, cols), bool)
    lost.flat[start : start + counts[level - 1]] = True
    out = img.copy()
    if smear:
        for r in range(rows):
            y0, y1 = r * mb, min(h, (r + 1) * mb)
            for c in np.flatnonzero(lost[r]):
                x0, x1 = c * mb, min(w, (c + 1) * mb)
                if y0 > 0:
                    out[y0:y1, x0:x1] = out[y0 - 1, x0:x1][None]
                else:
                    # no line above: smear the first good line below upwards
                    yb = next((rr * mb for rr in range(1, rows) if not lost[rr, c]), None)
                    fill = img[min(yb, h - 1), x0:x1] if yb is not None else np.full((x1 - x0, 3), 128, np.uint8)
                    out[y0:y1, x0:x1] = fill[None]
    else:
        dy, dx = int(round(dist * np.sin(ang))), int(round(dist * np.cos(ang)))
        stale = _u8(_gauss(_f32(_shift(img, dy, dx)), 1.0))
        m = np.repeat(np.repeat(lost, mb, axis=0), mb, axis=1)[:h, :w]
        out[m] = stale[m]
    return out


# --------------------------------------------------------------------------------------------
# registry


def _reg(name, family, fn, params, kadid=True):
    return Distortion(name=name, family=family, fn=fn, params=tuple(params), kadid=kadid,
                      description=(fn.__doc__ or "").strip().split("\n")[0])


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in [
        _reg("gaussian_blur", "blur", gaussian_blur, GAUSSIAN_SIGMA),
        _reg("lens_blur", "blur", lens_blur, LENS_RADIUS),
        _reg("motion_blur", "blur", motion_blur, MOTION_LENGTH),
        _reg("color_diffusion", "color", color_diffusion, DIFFUSION_SIGMA),
        _reg("color_shift", "color", color_shift, COLOR_SHIFT_PX),
        _reg("color_quantization", "color", color_quantization, COLOR_QUANT_COLORS),
        _reg("color_saturation_1", "color", color_saturation_1, DESATURATE_FACTOR),
        _reg("color_saturation_2", "color", color_saturation_2, OVERSATURATE_FACTOR),
        _reg("jpeg2000", "compression", jpeg2000, JP2_RATIO),
        _reg("jpeg", "compression", jpeg, JPEG_QUALITY),
        _reg("white_noise", "noise", white_noise, WHITE_NOISE_VAR),
        _reg("white_noise_color", "noise", white_noise_color, CHROMA_NOISE_SIGMA),
        _reg("impulse_noise", "noise", impulse_noise, IMPULSE_DENSITY),
        _reg("multiplicative_noise", "noise", multiplicative_noise, SPECKLE_VAR),
        _reg("denoise", "noise", denoise, DENOISE_NOISE_VAR),
        _reg("brighten", "brightness", brighten, BRIGHTEN_GAMMA),
        _reg("darken", "brightness", darken, DARKEN_GAMMA),
        _reg("mean_shift", "brightness", mean_shift, MEAN_SHIFT),
        _reg("jitter", "spatial", jitter, JITTER_STD_PX),
        _reg("non_eccentricity_patch", "spatial", non_eccentricity_patch, NEP_COUNT),
        _reg("pixelate", "spatial", pixelate, PIXELATE_BLOCK),
        _reg("quantization", "spatial", quantization, QUANT_LEVELS),
        _reg("color_block", "spatial", color_block, COLOR_BLOCK_COUNT),
        _reg("high_sharpen", "sharpness_contrast", high_sharpen, SHARPEN_AMOUNT),
        _reg("contrast_change", "sharpness_contrast", contrast_change, CONTRAST_DOWN),
        _reg("h264", "video", h264, H264_QP, kadid=False),
        _reg("hevc", "video", hevc, HEVC_QP, kadid=False),
        _reg("blocking", "video", blocking, BLOCKING_ALPHA, kadid=False),
        _reg("banding", "video", banding, BANDING_LEVELS, kadid=False),
        _reg("interlace", "video", interlace, INTERLACE_SHIFT_PX, kadid=False),
        _reg("packet_loss", "video", packet_loss, PACKET_LOSS_FRACTION, kadid=False),
        _reg("underexposure", "brightness", underexposure, UNDEREXPOSURE_STOPS, kadid=False),
    ]
}

KADID_TYPES: tuple[str, ...] = tuple(n for n, d in DISTORTIONS.items() if d.kadid)
VIDEO_TYPES: tuple[str, ...] = tuple(n for n, d in DISTORTIONS.items() if not d.kadid)


def apply(name: str, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion ``name`` at ``level`` (1..5); validates input and output."""
    try:
        d = DISTORTIONS[name]
    except KeyError:
        raise KeyError(f"unknown distortion {name!r}; known: {sorted(DISTORTIONS)}") from None
    _check(img, level)
    out = d.fn(img, level, rng)
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.shape != img.shape:  # pragma: no cover - guarded by tests
        raise RuntimeError(f"{name} changed the shape {img.shape} -> {out.shape}")
    return out


def benchmark(size: int = 384, repeats: int = 15, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per call of every distortion, levels 1..5 in turn, on a
    ``size x size`` photo.  CPU time (all threads of this process) is the steadier figure on a
    shared machine; wall time is what a single-threaded data loader waits."""
    import time

    from skimage import data
    from skimage.transform import resize

    img = (resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, float]] = {}
    for name in DISTORTIONS:
        apply(name, img, 3, rng)  # warm-up (codec libraries, FFT plans)
        wall, cpu = [], []
        for i in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            apply(name, img, LEVELS[i % len(LEVELS)], rng)
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        out[name] = (float(np.median(wall)), float(np.median(cpu)))
    return out


if __name__ == "__main__":  # python -m engines.train.distortions [size]
    import sys

    sz = int(sys.argv[1]) if len(sys.argv) > 1 else 384
    res = benchmark(sz)
    print(f"| distortion | family | wall ms @ {sz}x{sz} (median) | CPU ms (median) |")
    print("|---|---|---|---|")
    for n, (w, c) in res.items():
        print(f"| {n} | {DISTORTIONS[n].family} | {w:.1f} | {c:.1f} |")
