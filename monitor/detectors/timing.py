"""Timing detectors: stall, frame rate and PTS continuity from the timestamps of every decoded
frame (not only the sampled ones); the stream worker sends their values with its ticks."""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from pydantic import Field

from .registry import Detector, DetectorSettingsBase, register_detector, settings_model


class TimingSettings(DetectorSettingsBase):
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


@register_detector
class TimingDetectors(Detector):
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

    name = "timing"
    keys = ("stall_seconds", "fps", "fps_ratio", "pts_jumps", "pts_jump_max_seconds", "decode_errors")
    Settings = TimingSettings
    _EST_FRAMES = 25

    @classmethod
    def rules(cls, s: Any) -> list[dict[str, Any]]:
        return [
            dict(condition="decode_errors", key="decode_errors", comparison="above", threshold=3.0,
                 clear_threshold=1.0, clear_duration=10.0, severity="warning", cooldown=60.0,
                 update_interval=None,
                 description="At least 3 undecodable packets or corrupt frames in 10 s (packet loss, "
                             "damaged stream)."),
            dict(condition="stall", key="stall_seconds", comparison="above", threshold=3.0,
                 clear_threshold=1.0, critical_threshold=30.0, severity="warning", update_interval=10.0,
                 value_is_age=True,
                 description="No frame for 3 s (critical after 30 s); onset = the last frame."),
            dict(condition="fps_drop", key="fps_ratio", comparison="below", threshold=0.5,
                 clear_threshold=0.8, min_duration=5.0, clear_duration=5.0, severity="warning",
                 cooldown=60.0, description="Delivered frame rate below half the nominal rate for 5 s."),
            dict(condition="pts_jump", key="pts_jumps", comparison="above", threshold=1.0,
                 clear_threshold=1.0, severity="info", cooldown=60.0, update_interval=None,
                 description="Timestamp discontinuities in the last minute."),
        ]

    def __init__(self, nominal_fps: float | None = None, settings: Any = None,
                 start_time: float | None = None) -> None:
        self.settings = settings or settings_model()()
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
