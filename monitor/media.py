"""Which files are still images, sampling frames from video files (PyAV), for scoring, and the
picture detectors' step on a sampled frame (``detect_picture``).

Video frames are resized in swscale (``frame.reformat``) straight to the model's working scale
and cut into its input view there (``model_input``): this avoids converting full-resolution
frames to RGB in numpy.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from engines.views import InputView

from .sampler import Sampler

if TYPE_CHECKING:
    from .detectors import FrameDetectors

MAX_CONSECUTIVE_ERRORS = 100  # undecodable packets in a row that end a file (as the workers)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


class MediaError(RuntimeError):
    """An input that cannot be read, with the reason."""


@dataclass(frozen=True)
class SampledFrame:
    index: int           # running number of the sampled frame within its input
    pts: float | None    # presentation time in seconds (None for still images)
    rgb: np.ndarray      # uint8 (h, w, 3), possibly already the model's input view
    height: int          # original frame size, for region-map coordinates
    width: int


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sample_video(path: str | Path, fps: float, view: InputView | None = None) -> Iterator[SampledFrame]:
    """Frames of a video file at ``fps`` samples per second of media time (first frame first).

    ``view``: the model's input view of each frame (``model_input``); ``None`` keeps the
    decoded frame.
    """
    for index, t, frame in sample_frames(path, fps):
        rgb = model_input(frame, view) if view else frame.reformat(format="rgb24").to_ndarray()
        yield SampledFrame(index, t, rgb, frame.height, frame.width)


def model_input(frame: av.VideoFrame, view: InputView) -> np.ndarray:
    """A decoded frame as the model's input view (``engines.views``), resized in swscale.

    The resize to the view's working scale (or to the square of ``resize``) runs in swscale
    rather than in numpy; the fragments or crop are then cut from that.
    """
    if view.mode == "resize":
        return frame.reformat(width=view.size, height=view.size, format="rgb24").to_ndarray()
    h, w = view.working_shape(frame.height, frame.width)
    return view(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())


def sample_frames(path: str | Path, fps: float, on_frame: Callable[[float], None] | None = None,
                  on_error: Callable[[float], None] | None = None
                  ) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """``(index, t, frame)`` of the decoded frames ``1/fps`` seconds of media time apart.

    ``t`` is the frame's presentation time in seconds (frames without one are placed after the
    previous one at the stream's frame rate). ``on_frame(t)``, if given, sees every decoded
    frame, sampled or not (e.g. for the timing detectors). Without ``on_error`` the first
    decode error ends the file (``MediaError``); with it, as in the stream workers, a packet
    the decoder rejects or a frame it flags corrupt calls ``on_error(t of the last frame)``
    and decoding goes on, until ``MAX_CONSECUTIVE_ERRORS`` packets in a row failed.
    """
    if fps <= 0:
        raise ValueError("fps must be > 0")
    container, stream = _open_video(path)
    with container:
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        step = 1.0 / float(rate) if rate else 1.0 / fps
        sampler, index, t, failed = Sampler(1.0 / fps), 0, None, 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError) as e:
                    failed += 1
                    if on_error is None or failed > MAX_CONSECUTIVE_ERRORS:
                        raise MediaError(f"decode failed after {index} sampled frames: {e}") from None
                    on_error(0.0 if t is None else t)
                    continue
                failed = 0
                for frame in frames:
                    t = float(frame.time) if frame.time is not None else (0.0 if t is None else t + step)
                    if on_frame is not None:
                        on_frame(t)
                    if on_error is not None and frame.is_corrupt:
                        on_error(t)
                    if not sampler.take(t):
                        continue
                    yield index, t, frame
                    index += 1
        except av.FFmpegError as e:
            raise MediaError(f"decode failed after {index} sampled frames: {e}") from None
        if index == 0:
            raise MediaError("no decodable video frames")


def _open_video(path: str | Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    """The opened container (the caller closes it) and its first video stream."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"cannot open video: {e}") from None
    if not container.streams.video:
        container.close()
        raise MediaError("no video stream")
    return container, container.streams.video[0]


# pixel formats whose first plane is the 8-bit luma (NVDEC's NV12 included)
_Y8_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "yuv411p", "yuv410p", "nv12", "nv21", "gray"})


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The decoded picture's luma at source resolution, for the block-grid detectors: a view of
    the Y plane (no copy) for 8-bit YUV, else one swscale conversion to grey."""
    if frame.format.name in _Y8_FORMATS:
        p = frame.planes[0]
        return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:frame.height, :frame.width]
    return frame.reformat(format="gray").to_ndarray()


def detect_picture(detectors: FrameDetectors, frame: av.VideoFrame, t: float, wall: float, width: int,
                   kept: np.ndarray | None) -> dict[str, float]:
    """The picture detectors on one sampled frame: the step the stream worker and ``vqmon
    report`` share. They see the frame ``width`` wide (``detector_frame``; 0: ``kept``, the
    picture the caller keeps anyway) and the decoded luma plane for the block measures."""
    picture = detector_frame(frame, width) if width else kept
    return detectors.update(picture, t, wall, source_size=(frame.width, frame.height),
                            luma_native=luma_plane(frame))


def detector_frame(frame: av.VideoFrame, width: int) -> np.ndarray:
    """RGB frame for the picture detectors: ``width`` pixels wide (even sizes, aspect ratio
    kept), or the decoded size when the frame is not wider than that (never upscaled)."""
    w, h = frame.width, frame.height
    if width >= w:
        return frame.to_ndarray(format="rgb24")
    dw = width - width % 2
    dh = max(2, int(round(h * dw / w / 2)) * 2)
    return frame.reformat(width=dw, height=dh, format="rgb24").to_ndarray()


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float | None       # average frame rate, when the container knows it
    duration: float | None  # seconds, when the container knows it
    pix_fmt: str | None


def probe_video(path: str | Path) -> VideoInfo:
    """What the container says about its first video stream (nothing is decoded)."""
    container, vs = _open_video(path)
    with container:
        cc = vs.codec_context
        rate = vs.average_rate or vs.guessed_rate
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(cc.name, cc.width, cc.height, float(rate) if rate else None, duration,
                         cc.format.name if cc.format else None)
