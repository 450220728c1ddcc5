"""Clean contents the repository has no footage of, synthesised: night scenes, a dark (low-key)
scene, snow, flat title cards with text, film grain. Used as clean controls by the gross-damage
calibration (bench/calibrate_gross.py) and by bench/degradations.py.

Every function returns uint8 RGB ``(h, w, 3)`` and is deterministic for a given ``seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)


def _font(size: int) -> ImageFont.ImageFont:
    for d in FONT_DIRS:
        p = d / "DejaVuSans-Bold.ttf"
        if p.is_file():
            return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size)


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def night(w: int = 1280, h: int = 720, seed: int = 0, lights: int = 40) -> np.ndarray:
    """A town at night: dark sky and buildings (levels 12-45), lit windows and street lights
    with a glow, a little sensor noise. (A night picture darker still, 98 % of it under 10 %
    luma, is black by FFmpeg blackdetect's definition, and the monitor reports it so.)"""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    img = np.empty((h, w, 3), np.float32)
    img[...] = (12 + 14 * yy)[..., None] * np.array([0.8, 0.9, 1.3], np.float32)
    x = 0
    while x < w:  # building silhouettes
        bw, top = int(rng.integers(w // 20, w // 6)), int(rng.integers(h // 4, h // 2))
        img[top:, x:x + bw] = rng.uniform(18, 45)
        for _ in range(int(rng.integers(2, 10))):  # lit windows
            wx, wy = int(rng.integers(x, x + max(bw - 8, 1))), int(rng.integers(top, h - 10))
            img[wy:wy + max(4, h // 90), wx:wx + max(3, w // 160)] = rng.uniform(120, 230) * np.array([1.0, 0.85, 0.5])
        x += bw + int(rng.integers(0, w // 40))
    glow = np.zeros((h, w), np.float32)
    for _ in range(lights):  # street lights
        glow[int(rng.integers(h // 2, h - 2)), int(rng.integers(0, w))] = 1.0
    glow = ndimage.gaussian_filter(glow, w / 320) * 255.0 * 40.0
    img += np.minimum(glow, 255.0)[..., None] * np.array([1.0, 0.9, 0.6], np.float32)
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)
    return _u8(img)


def low_key(photo: np.ndarray, gamma: float = 2.6) -> np.ndarray:
    """A legitimately dark scene from a photo: mid-tones pulled down hard (``x**gamma``),
    highlights kept (a low-key grade, not an exposure error)."""
    return _u8(255.0 * (photo.astype(np.float32) / 255.0) ** gamma)


def snow(w: int = 1280, h: int = 720, seed: int = 0) -> np.ndarray:
    """Bright, low-contrast snowfield (levels ~200-235) with soft drifts, a few dark trees and
    falling flakes."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (h // 16 + 1, w // 16 + 1)).astype(np.float32)
    drift = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    lum = 218 + 8 * drift - 10 * yy
    img = np.repeat(lum[..., None], 3, axis=2) * np.array([0.97, 0.99, 1.02], np.float32)
    for _ in range(12):  # trees
        x, top = int(rng.integers(0, w)), int(rng.integers(h // 5, h // 2))
        tw = max(2, w // 200)
        img[top:int(top + h * 0.3), x:x + tw] = rng.uniform(50, 90)
    flakes = rng.random((h, w)) < 0.002
    img[flakes] = 250.0
    img += rng.normal(0, 1.0, img.shape).astype(np.float32)
    return _u8(img)


TITLE_COLOURS = ((16, 32, 96), (200, 40, 40), (240, 240, 240), (30, 30, 30), (20, 110, 60))


def title_card(w: int = 1280, h: int = 720, seed: int = 0, text: str = "Evening News") -> np.ndarray:
    """A flat-colour card (colour by ``seed``) with a title and a line of small text."""
    bg = TITLE_COLOURS[seed % len(TITLE_COLOURS)]
    fg = (20, 20, 20) if sum(bg) > 450 else (250, 250, 250)
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    big, small = _font(max(12, h // 8)), _font(max(8, h // 28))
    d.text((w // 10, h // 3), text, fill=fg, font=big)
    d.text((w // 10, h // 3 + h // 6), "Live from the studio  -  21:00", fill=fg, font=small)
    if seed % 2:  # a thin rule under the title
        d.rectangle((w // 10, h // 3 + h // 7, w - w // 10, h // 3 + h // 7 + max(2, h // 180)), fill=fg)
    return np.asarray(im)


def graphic(w: int = 1280, h: int = 720, seed: int = 0) -> np.ndarray:
    """A flat graphic: a vertical gradient with a few flat-colour panels and a lower third."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (w, h))
    top, bot = rng.integers(20, 200, 3), rng.integers(20, 200, 3)
    yy = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = (top * (1 - yy) + bot * yy) * np.ones((1, w, 1))
    im = Image.fromarray(_u8(arr))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 2 // 3))
        d.rectangle((x0, y0, x0 + w // 5, y0 + h // 6), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    d.rectangle((0, h * 4 // 5, w, h * 4 // 5 + h // 10), fill=(240, 240, 240))
    d.text((w // 20, h * 4 // 5 + h // 60), "BREAKING: markets close higher", fill=(10, 10, 60),
           font=_font(max(8, h // 18)))
    return np.asarray(im)


def ticker(frame: np.ndarray, i: int, text: str = "  MARKETS  +1.2 %   WEATHER  12 C   TRAFFIC  A1 clear  ") -> np.ndarray:
    """``frame`` with a news ticker scrolling through its bottom tenth (4 px a frame): a
    graphic on air moves, a frozen feed does not."""
    h, w = frame.shape[:2]
    band = h // 10
    strip = Image.new("RGB", (w * 2, band), (10, 10, 60))
    d = ImageDraw.Draw(strip)
    font = _font(max(8, band * 2 // 3))
    x = 0
    while x < w * 2:
        d.text((x, band // 6), text, fill=(250, 250, 250), font=font)
        x += int(d.textlength(text, font=font)) or w
    out = frame.copy()
    out[h - band:] = np.roll(np.asarray(strip), -4 * i, axis=1)[:, :w]
    return out


def film_grain(photo: np.ndarray, sigma: float = 4.0, seed: int = 0) -> np.ndarray:
    """Mild film grain: monochrome Gaussian grain of ``sigma`` levels, ~1.5 px grains (a 0.7 px
    blur), stronger in the mid-tones as film grain is."""
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    g = rng.normal(0, 1, (h, w)).astype(np.float32)
    g = ndimage.gaussian_filter(g, 0.7)
    g *= sigma / max(float(g.std()), 1e-6)
    p = photo.astype(np.float32)
    mid = 4.0 * (p / 255.0) * (1.0 - p / 255.0)  # 1 at mid-grey, 0 at black and white
    return _u8(p + g[..., None] * (0.4 + 0.6 * mid))


SYNTHETIC = {  # name -> f(w, h, seed) for the stand-alone controls
    "night": night,
    "snow": snow,
    "title": title_card,
    "graphic": graphic,
}
