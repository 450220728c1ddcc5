"""One file through the monitor's pipeline at full speed, on media time.

The same parts as ``vqmon run``: frames sampled ``1/rate`` seconds of media time apart
(``monitor.media.sample_frames``, the workers' ``Sampler``), the picture detectors on a frame
``frame_width`` wide (``monitor.media.detect_picture``, the stream worker's step), the
quality model in batches (``engines.engine.QualityEngine``) and the alert engine with the
stream rules (``monitor.alerts``). Two differences, both because a file is read as fast as it
decodes: the alert engine is clocked with the sample's media time (the service uses the wall
clock, which would squeeze every rule duration), and the timing detectors see media time as
their arrival time, so ``stall_seconds`` is a gap in the timestamps, ``fps_ratio`` the frame
rate the timestamps carry and ``pts_jumps`` the discontinuities -- what a file can show.

Times in a result are seconds from the file's first decoded frame.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..alerts import AlertContext, AlertEngine, AlertEvent, AlertRule
from ..detectors import FrameDetectors, TimingDetectors
from ..media import MediaError, VideoInfo, detect_picture, detector_frame, model_input, probe_video, sample_frames
from ..stream_config import DetectorConfig

log = logging.getLogger(__name__)

VIEW_WIDTH = 480     # width of the frames kept for thumbnails (aspect ratio kept)
MAX_ALERT_MOMENTS = 6  # alert onsets shown per file (the first ones)


@dataclass
class Event:
    """One alert, from its onset to its end (or the end of the file)."""

    condition: str
    severity: str
    key: str
    start: float
    announced: float            # media time of the 'start' event (onset + the rule's min_duration)
    threshold: float
    peak: float                 # worst value of the rule's (smoothed) value during the alert
    end: float | None = None
    open_at_end: bool = False   # still active when the file ended
    message: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


@dataclass
class Moment:
    """A sampled frame worth a look, with its region map."""

    t: float
    score: float
    reason: str
    image: np.ndarray               # uint8 RGB, VIEW_WIDTH wide at most, true aspect ratio
    region: np.ndarray              # the model's region map (rows, cols), 0-100
    worst_cells: list[tuple[int, int, float]]


@dataclass
class Settings:
    rate: float                                  # samples per second of media time
    rules: list[AlertRule]
    detectors: DetectorConfig = field(default_factory=DetectorConfig)
    lowest: int = 3                              # lowest-scoring moments to keep per file
    quiet: tuple[str, ...] = ()                  # conditions whose onsets get no thumbnail


@dataclass
class FileResult:
    path: str
    info: VideoInfo | None = None
    error: str | None = None
    t: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    worst_region: list[float] = field(default_factory=list)
    detectors: dict[str, list[float]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    elapsed: float = 0.0            # seconds this file took to analyse
    verdict: str = "error"          # set by verdict.judge
    reasons: list[str] = field(default_factory=list)

    @property
    def media_seconds(self) -> float:
        return self.t[-1] - self.t[0] if len(self.t) > 1 else 0.0

    def stats(self) -> dict[str, float | None]:
        """Score statistics over the sampled frames (None without samples)."""
        if not self.score:
            return {"samples": 0, "mean": None, "median": None, "p10": None, "min": None, "max": None}
        a = np.asarray(self.score, dtype=np.float64)
        return {"samples": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
                "p10": float(np.percentile(a, 10)), "min": float(a.min()), "max": float(a.max())}


class _LowestMoments:
    """The ``k`` lowest-scoring frames at least ``gap`` seconds apart, kept while streaming."""

    def __init__(self, k: int, gap: float):
        self.k, self.gap = k, gap
        self.kept: list[Moment] = []

    def offer(self, t: float, score: float, make: Callable[[], Moment]) -> None:
        if self.k <= 0:
            return
        near = [m for m in self.kept if abs(m.t - t) < self.gap]
        if any(m.score <= score for m in near):
            return
        if not near and len(self.kept) >= self.k and score >= max(m.score for m in self.kept):
            return
        self.kept = [m for m in self.kept if m not in near] + [make()]
        if len(self.kept) > self.k:
            self.kept.remove(max(self.kept, key=lambda m: m.score))


class _EventLog:
    """Alert events of one file folded into one :class:`Event` per alert."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._open: dict[str, Event] = {}

    def add(self, ev: AlertEvent, closing: bool = False) -> Event | None:
        """Fold one engine event in; returns the new :class:`Event` for a 'start'."""
        if ev.kind == "start":
            e = Event(ev.condition, ev.severity, ev.key, ev.started_at, ev.at, ev.threshold, ev.peak,
                      message=ev.message)
            self.events.append(e)
            self._open[ev.condition] = e
            return e
        e = self._open.get(ev.condition)
        if e is None:
            return None
        e.severity, e.peak = ev.severity, ev.peak
        if ev.kind == "resolved":
            e.end = ev.ended_at
            e.open_at_end = closing
            del self._open[ev.condition]
        return None


def analyze(path: str, engine, settings: Settings,
            progress: Callable[[float, float | None], None] | None = None) -> FileResult:
    """Decode, detect, score and alert one file; errors end up in ``result.error``.

    ``progress(t, duration)`` is called with the media time reached after each batch and the
    file's duration (None when the container does not say).
    """
    res = FileResult(path=path)
    started = time.monotonic()
    try:
        res.info = probe_video(path)
    except (MediaError, OSError) as e:
        res.error = str(e)
        return res
    try:
        _run(res, engine, settings, progress)
    except (MediaError, ValueError, OSError) as e:
        # keep what was analysed before a decode failure: the report shows it with the error
        res.error = str(e)
    except Exception as e:  # noqa: BLE001 -- e.g. PyAV's IndexError on a stream that appears
        # mid-file in a damaged container: one bad file must not end the report of the others
        log.debug("%s: unexpected error", path, exc_info=True)
        res.error = f"read failed: {type(e).__name__}: {e}"
    res.elapsed = time.monotonic() - started
    return res


def _run(res: FileResult, engine, settings: Settings,
         progress: Callable[[float, float | None], None] | None) -> None:
    det_cfg = settings.detectors
    frame_det = FrameDetectors(det_cfg.settings) if det_cfg.enabled else None
    timing = TimingDetectors(nominal_fps=res.info.fps, settings=det_cfg.settings) if det_cfg.enabled else None
    stream = "file"
    alerts = AlertEngine(stream_rules={stream: settings.rules}, snapshots=False)
    event_log = _EventLog()
    duration = res.info.duration or 0.0
    # twice as many candidates as shown: some may fall inside alerts that have their own picture
    lowest = _LowestMoments(2 * settings.lowest, gap=max(5.0, duration / 10.0))
    origin: list[float] = []   # media time of the first decoded frame

    def rel(t: float) -> float:
        if not origin:
            origin.append(t)
        return t - origin[0]

    def on_frame(t: float) -> None:
        t = rel(t)
        if timing is not None:
            timing.on_frame(t, t)  # media time as the arrival time: see the module docstring

    def on_error(t: float) -> None:
        if timing is not None and origin:  # (errors before the first frame do not count)
            timing.on_decode_error(t - origin[0])

    batch: list[tuple[float, np.ndarray, np.ndarray, dict[str, float]]] = []

    def flush() -> None:
        preds = engine.score([b[1] for b in batch])
        for (t, _, view, values), pred in zip(batch, preds):
            worst = pred.region_map.worst(3)
            res.t.append(t)
            res.score.append(pred.score)
            res.worst_region.append(worst[0][2])
            for k, v in values.items():
                res.detectors.setdefault(k, []).append(v)

            def moment(reason: str, t=t, pred=pred, view=view, worst=worst) -> Moment:
                return Moment(t, pred.score, reason, view, pred.region_map.values.copy(), worst)

            sample = {**values, "score": pred.score, "worst_region": worst[0][2]}
            for ev in alerts.update(stream, sample, t, AlertContext(score=pred.score, worst_regions=worst)):
                e = event_log.add(ev)
                if e is not None and e.condition not in settings.quiet and len(res.moments) < MAX_ALERT_MOMENTS:
                    res.moments.append(moment(f"{e.condition} alert ({e.severity})"))
            lowest.offer(t, pred.score, lambda m=moment: m("lowest score"))
        if progress is not None:
            progress(batch[-1][0], res.info.duration)
        batch.clear()

    try:
        for _, t, frame in sample_frames(res.path, settings.rate, on_frame, on_error):
            t = rel(t)
            model_rgb = model_input(frame, engine.view)
            view = detector_frame(frame, VIEW_WIDTH)
            values: dict[str, float] = {}
            if frame_det is not None:
                values.update(detect_picture(frame_det, frame, t, t, det_cfg.frame_width, view))
                values.update(timing.values(t))
            batch.append((t, model_rgb, view, values))
            if len(batch) >= engine.max_batch:
                flush()
    except MediaError:
        if batch:  # the frames decoded before the error still count
            flush()
        raise
    else:
        if batch:
            flush()
    finally:
        end = res.t[-1] if res.t else 0.0
        for ev in alerts.remove_stream(stream, end, reason="end of file"):
            event_log.add(ev, closing=True)
        res.events = event_log.events
        # the lowest scores, leaving out those inside an alert whose onset already has a picture
        shown = [(e.start, e.end if e.end is not None else end) for e in res.events
                 if any(e.start <= m.t <= (e.end if e.end is not None else end) for m in res.moments)]
        extra = [m for m in lowest.kept if not any(a <= m.t <= b for a, b in shown)]
        extra = sorted(extra, key=lambda m: m.score)[:settings.lowest]
        res.moments = sorted(res.moments + extra, key=lambda m: m.t)

