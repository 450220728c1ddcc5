"""Reading still images and sampling frames from video files (PyAV), for scoring.

Video frames are resized in swscale (``frame.reformat``) straight to the model's input size:
the model sees the whole frame squeezed to a square anyway (engines.preprocess), so this
loses nothing and avoids converting full-resolution frames to RGB in numpy.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from .sampler import Sampler

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


class MediaError(RuntimeError):
    """An input that cannot be read, with the reason."""


@dataclass(frozen=True)
class SampledFrame:
    index: int           # running number of the sampled frame within its input
    pts: float | None    # presentation time in seconds (None for still images)
    rgb: np.ndarray      # uint8 (h, w, 3), possibly already resized for the model
    height: int          # original frame size, for region-map coordinates
    width: int


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into uint8/uint16 (H,W[,C]) keeping its bit depth and alpha."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(img, dtype=np.uint16) if img.mode != "I" else \
                    np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MediaError(f"cannot read image: {e}") from None


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sample_video(path: str | Path, fps: float, size: int | None = None) -> Iterator[SampledFrame]:
    """Frames of a video file at ``fps`` samples per second of media time (first frame first).

    ``size``: resize to ``size x size`` RGB in swscale; ``None`` keeps the decoded size.
    """
    if fps <= 0:
        raise ValueError("fps must be > 0")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"cannot open video: {e}") from None
    with container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sampler, index = Sampler(1.0 / fps), 0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else index / fps
                if not sampler.take(t):
                    continue
                rgb = (frame.reformat(width=size, height=size, format="rgb24") if size
                       else frame.reformat(format="rgb24")).to_ndarray()
                yield SampledFrame(index, t, rgb, frame.height, frame.width)
                index += 1
        except av.FFmpegError as e:
            raise MediaError(f"decode failed after {index} sampled frames: {e}") from None
        if index == 0:
            raise MediaError("no decodable video frames")
