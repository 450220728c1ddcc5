"""Pristine (clean) content for pre-training on synthetic distortions.

Sources, each yielding ``(image_id, uint8 (H, W, 3) RGB array)`` at native size:

* :func:`package_images`: colour photographs shipped inside installed packages
  (``skimage.data``; scikit-learn's two sample images when scikit-learn happens to be installed).
* :func:`directory_images`: every image file under a directory (sorted, so the order is stable).
* :func:`video_frames`: frames sampled evenly in time from a video clip (PyAV).
* :func:`livec_top_images`: the highest-MOS images of a labelled set (image directory plus a
  labels CSV ``image,mos,...`` or a mapping name -> MOS).

:func:`fit` and :func:`pristine_crops` turn them into ``size x size`` training inputs.

Every location is passed in by the caller; nothing here knows where data lives.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIMAGE_PHOTOS",
    "directory_images",
    "fit",
    "livec_top_images",
    "load_rgb",
    "package_images",
    "pristine_crops",
    "read_mos_labels",
    "video_frames",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pnm")

# natural colour photographs in skimage.data that load without a download (microscopy,
# astronomy, synthetic patterns and RGBA logos left out)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right")


def _as_rgb_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"unsupported image shape {a.shape}")
    return np.ascontiguousarray(a[..., :3])


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (palette/grey/alpha/16-bit converted)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.uint32)
            a = np.clip((a * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
            return _as_rgb_uint8(a)
        if im.mode == "RGBA" or im.mode == "LA" or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return _as_rgb_uint8(np.asarray(im.convert("RGB")))


def package_images(names: Sequence[str] = SKIMAGE_PHOTOS, *, sklearn: bool = True) -> list[tuple[str, np.ndarray]]:
    """Colour photos bundled with installed packages, as ``("skimage:<name>", array)``.

    Images that need a download (``pooch``) or are missing in the installed version are
    skipped.  With ``sklearn=True`` and scikit-learn importable, its ``china.jpg`` and
    ``flower.jpg`` are added as ``"sklearn:<name>"``.
    """
    from skimage import data

    out: list[tuple[str, np.ndarray]] = []
    stereo = None
    for name in names:
        try:
            if name in ("motorcycle_left", "motorcycle_right"):
                if stereo is None:
                    stereo = data.stereo_motorcycle()
                a = stereo[0] if name.endswith("left") else stereo[1]
            else:
                a = getattr(data, name)()
        except (AttributeError, ImportError, OSError, ValueError):
            continue
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            continue
        out.append((f"skimage:{name}", _as_rgb_uint8(a)))
    if sklearn:
        try:
            from sklearn.datasets import load_sample_images  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            bunch = load_sample_images()
            for fn, a in zip(bunch.filenames, bunch.images):
                out.append((f"sklearn:{Path(fn).stem}", _as_rgb_uint8(a)))
    return out


def directory_images(
    root: str | Path, *, recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> Iterator[tuple[str, np.ndarray]]:
    """Every image file under ``root`` (sorted by relative path), id = the relative path.

    Files that cannot be decoded are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    exts = {e.lower() for e in extensions}
    pattern = "**/*" if recursive else "*"
    paths = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in exts)
    for p in paths:
        try:
            a = load_rgb(p)
        except (OSError, ValueError):
            continue
        yield p.relative_to(root).as_posix(), a


def _frame_rgb(frame: "av.VideoFrame", max_side: int | None) -> np.ndarray:
    w, h = frame.width, frame.height
    if max_side is not None and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(2, int(round(w * s))), max(2, int(round(h * s)))
        return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


def video_frames(
    path: str | Path, n_frames: int = 8, *, max_side: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """``n_frames`` frames spread evenly over a clip, as ``("<stem>@<seconds>s", rgb)``.

    Frame ``i`` is the first frame at or after ``(i + 0.5) / n_frames`` of the clip.  Clips
    whose duration the container knows are sampled by seeking; others are decoded twice
    (count, then pick).  ``max_side`` downsizes in swscale while converting (keeps aspect).
    Colour is converted by FFmpeg's default matrix; HDR (PQ/HLG) clips are not tone-mapped and
    are not pristine content in that sense: pass SDR clips.
    """
    import av

    path = Path(path)
    if n_frames < 1:
        return
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        duration = None
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
    if duration and duration > 0:
        yield from _frames_by_seek(path, n_frames, duration, max_side)
    else:
        yield from _frames_by_count(path, n_frames, max_side)


def _frames_by_seek(path: Path, n: int, duration: float, max_side: int | None) -> Iterator[tuple[str, np.ndarray]]:
    import av

    targets = [(i + 0.5) / n * duration for i in range(n)]
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        start = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
        last_t = -math.inf
        for t in targets:
            t_abs = start + t
            c.seek(int(t_abs / st.time_base), stream=st, backward=True, any_frame=False)
            chosen = None
            for fr in c.decode(st):
                ft = fr.time if fr.time is not None else 0.0
                chosen = fr
                if ft >= t_abs - 1e-6:
                    break
            if chosen is None:
                continue
            ft = chosen.time if chosen.time is not None else t_abs
            if ft <= last_t:  # seek landed on a frame already yielded (clip shorter than stated)
                continue
            last_t = ft
            yield f"{path.stem}@{ft - start:.2f}s", _frame_rgb(chosen, max_side)


def _frames_by_count(path: Path, n: int, max_side: int | None) -> Iterator[tuple[str, np.ndarray]]:
    import av

    with av.open(str(path)) as c:
        total = sum(1 for _ in c.decode(video=0))
    if total == 0:
        return
    picks = sorted({min(total - 1, int((i + 0.5) / n * total)) for i in range(n)})
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        rate = float(st.average_rate) if st.average_rate else None
        want = iter(picks)
        nxt = next(want, None)
        for i, fr in enumerate(c.decode(st)):
            if nxt is None:
                break
            if i == nxt:
                t = fr.time if fr.time is not None else (i / rate if rate else float(i))
                yield f"{path.stem}@{t:.2f}s", _frame_rgb(fr, max_side)
                nxt = next(want, None)


def read_mos_labels(labels_csv: str | Path, image_col: str = "image", mos_col: str = "mos") -> dict[str, float]:
    """``{image file name: MOS}`` from a CSV with a header row."""
    with open(labels_csv, newline="") as f:
        return {row[image_col]: float(row[mos_col]) for row in csv.DictReader(f)}


def livec_top_images(
    image_dir: str | Path,
    labels: str | Path | Mapping[str, float],
    *,
    top_k: int | None = None,
    min_mos: float | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The best-rated images of a labelled set, highest MOS first, as ``("livec:<name>", rgb)``.

    ``labels`` is a CSV path (``image,mos`` columns) or a mapping name -> MOS (higher is
    better).  Keeps images with ``mos >= min_mos`` if given, then the first ``top_k`` if
    given.  Use only the *training* half's labels here.
    """
    mos = read_mos_labels(labels) if isinstance(labels, (str, Path)) else dict(labels)
    ranked = sorted(mos.items(), key=lambda kv: (-kv[1], kv[0]))
    if min_mos is not None:
        ranked = [kv for kv in ranked if kv[1] >= min_mos]
    if top_k is not None:
        ranked = ranked[:top_k]
    image_dir = Path(image_dir)
    return [(f"livec:{name}", load_rgb(image_dir / name)) for name, _ in ranked]


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    # Pillow's bilinear is antialiased when shrinking, like the service's preprocessing
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def fit(img: np.ndarray, size: int, mode: str = "resize", rng: np.random.Generator | None = None) -> np.ndarray:
    """One ``size x size`` uint8 RGB view of ``img``.

    * ``"resize"``: the whole image squeezed to a square (aspect not kept), the same policy as
      ``engines.preprocess`` applies to frames in service.
    * ``"center_crop"``: shorter side resized to ``size``, then the central square.
    * ``"random_crop"``: a ``size x size`` window at native resolution at a random position
      (``rng`` required); images smaller than ``size`` are first enlarged to fit.
    """
    img = _as_rgb_uint8(img)
    h, w = img.shape[:2]
    if mode == "resize":
        return _resize(img, size, size)
    if mode == "center_crop":
        s = size / min(h, w)
        nh, nw = max(size, int(round(h * s))), max(size, int(round(w * s)))
        r = _resize(img, nw, nh)
        y0, x0 = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(r[y0 : y0 + size, x0 : x0 + size])
    if mode == "random_crop":
        if rng is None:
            raise ValueError("random_crop needs rng")
        if min(h, w) < size:
            s = size / min(h, w)
            h, w = max(size, int(math.ceil(h * s))), max(size, int(math.ceil(w * s)))
            img = _resize(img, w, h)
        y0 = int(rng.integers(0, h - size + 1))
        x0 = int(rng.integers(0, w - size + 1))
        return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])
    raise ValueError(f"unknown mode {mode!r}: resize, center_crop or random_crop")


def pristine_crops(
    sources: Iterable[tuple[str, np.ndarray]],
    size: int = 384,
    mode: str = "resize",
    rng: np.random.Generator | None = None,
    *,
    per_image: int = 1,
) -> Iterator[tuple[str, np.ndarray]]:
    """``size x size`` views of every source image (``per_image`` of them; ids get ``#k``
    when ``per_image > 1``).  Deterministic given ``rng`` (only ``random_crop`` uses it)."""
    if per_image < 1:
        raise ValueError("per_image must be >= 1")
    for image_id, img in sources:
        for k in range(per_image):
            yield (image_id if per_image == 1 else f"{image_id}#{k}"), fit(img, size, mode, rng)
