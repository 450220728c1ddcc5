"""What the stream workers and the scorer report, applied to each stream's state
(``monitor.stream_state``), the metrics, the alerts and the sinks.

Called from the streams' supervisor threads (``StreamListener``), the scoring thread
(``on_scored``, ``on_drop``, ``on_batch``) and the monitor's housekeeping loop.
"""
from __future__ import annotations

import logging
import math
import time

from .alert_router import AlertRouter
from .metrics import Metrics
from .publisher import Publisher
from .source import FrameMessage, StreamListener
from .stream_state import TERMINAL_STATES, StreamState

log = logging.getLogger(__name__)

DOWN_EVENT_STATES = ("error", "stale", "failed")  # a stream in these is down: stream_down starts
ERROR_LOG_INTERVAL = 60.0  # the same error again (a source that stays away) is logged once a minute


class StreamTracker(StreamListener):
    def __init__(self, streams: dict[str, StreamState], metrics: Metrics, alerts: AlertRouter,
                 publisher: Publisher):
        self.streams, self.metrics, self.alerts, self.publisher = streams, metrics, alerts, publisher
        self.batcher = None  # set once the scorer runs; frames go to it

    # -- worker callbacks (supervisor threads); the worker has set st.state and st.error -------
    def on_state(self, stream: str, state: str, up: bool, detail: dict) -> None:
        st = self.streams[stream]
        self.metrics.stream_up.labels(stream).set(1 if up else 0)
        err = detail.get("error")
        now = time.time()
        if up:
            st.logged_error = None
            if st.down_open:
                st.down_open = False
                self._stream_event(st, "stream_down", "resolved", "critical", f"stream {stream} is up again", now)
        elif state in DOWN_EVENT_STATES and not st.down_open:
            st.down_open = True
            self._stream_event(st, "stream_down", "start", "critical", f"stream {stream} is down: {err or state}", now)
        elif state == "ended":
            st.down_open = False
            self._stream_event(st, "stream_ended", "info", "info", f"stream {stream} reached the end of its input", now)
        if err and state in DOWN_EVENT_STATES:
            repeat = err == st.logged_error and now - st.logged_at < ERROR_LOG_INTERVAL
            level = logging.DEBUG if repeat else logging.ERROR if state == "failed" else logging.WARNING
            if not repeat:
                st.logged_error, st.logged_at = err, now
            retry = detail.get("retry_in")
            log.log(level, "stream %s: %s%s", stream, err, f" (retry in {retry:.1f} s)" if retry else "")
        elif up:  # the worker reports "up" when it changes to it
            log.info("stream %s: up", stream)
        if state in TERMINAL_STATES:
            self.alerts.remove_stream(stream, reason=f"stream {state}")
        self.publisher.state(st, up=up)

    def on_frame(self, msg: FrameMessage) -> None:
        st = self.streams[msg.stream]
        st.last_decoded_wall = max(st.last_decoded_wall or 0.0, msg.ts)
        st.last_image, st.last_size = msg.image, (msg.width, msg.height)
        if msg.detectors:
            self.on_detectors(msg.stream, msg.detectors, msg.pts, msg.ts)
        if self.batcher is not None:
            self.batcher.submit(msg)

    def on_decoded(self, stream: str, count: int, wall_time: float) -> None:
        self.streams[stream].last_decoded_wall = wall_time
        self.metrics.decoded.labels(stream).inc(count)
        self.metrics.last_frame.labels(stream).set(wall_time)

    def on_detectors(self, stream: str, values: dict[str, float], pts: float | None, ts: float) -> None:
        st = self.streams[stream]
        clean = {k: float(v) for k, v in values.items() if v is not None}
        st.detectors.update(clean)
        self.metrics.set_detectors(stream, clean)
        self.alerts.update(st, clean)

    def on_timing(self, stream: str, values: dict[str, float]) -> None:
        self.streams[stream].timing = {k: float(v) for k, v in values.items() if v is not None}

    def on_decode_errors(self, stream: str, count: int) -> None:
        self.on_drop(stream, "decode_error", count)

    def on_shed(self, stream: str, count: int) -> None:
        self.on_drop(stream, "decoder_behind", count)

    def on_reconnect(self, stream: str) -> None:
        self.metrics.reconnects.labels(stream).inc()

    # -- scorer callbacks (scoring thread) ------------------------------------------------------
    def on_drop(self, stream: str, reason: str, count: int) -> None:
        self.metrics.dropped.labels(stream, reason).inc(count)
        if reason != "decode_error":
            self.streams[stream].dropped += count

    def on_batch(self, model: str, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_latency.observe(seconds)

    def on_scored(self, r) -> None:
        f, rm = r.frame, r.region_map
        st = self.streams[f.stream]
        top = rm.worst(3)
        worst = top[0][2]
        st.scored += 1
        st.score, st.worst = r.score, worst
        st.smoothed = st.smoother.update(f.ts, r.score)
        st.history.append((f.ts, r.score, worst, st.smoothed))
        st.last_scored = (st.scored, r)
        m = self.metrics
        m.quality_score.labels(f.stream).set(r.score)
        m.quality_smoothed.labels(f.stream).set(st.smoothed)
        m.worst_region.labels(f.stream).set(worst)
        m.scored.labels(f.stream).inc()
        self.publisher.scored(st, r, worst_cell=top[0][:2])
        self.alerts.update(st, {"score": r.score, "worst_region": worst}, worst_regions=top,
                           image=f.image, frame_size=(f.width, f.height))

    # -- housekeeping (the monitor's loop, about twice a second) --------------------------------
    def housekeeping(self) -> None:
        """Timing values and the stall time to metrics and alerts; the state of streams that are
        not up to the sinks (a stream that is up writes its state with every score)."""
        now = time.time()
        for name, st in self.streams.items():
            if st.terminal or st.state == "stopped":
                continue
            timing = dict(st.timing)
            # a stall needs a stream that was delivering: one that never came up is not
            # stalled but down, which stream_down reports once its worker gives up opening it
            ref = st.last_decoded_wall
            timing["stall_seconds"] = max(0.0, now - ref) if ref is not None else math.nan
            if st.state != "up":
                timing.pop("fps", None)
                timing.pop("fps_ratio", None)
            self.metrics.set_detectors(name, timing)
            self.alerts.update(st, timing)
            if st.state != "up":
                self.publisher.state(st, up=False)

    def _stream_event(self, st: StreamState, condition: str, kind: str, severity: str, message: str,
                      at: float) -> None:
        self.publisher.event({"stream": st.name, "condition": condition, "kind": kind, "severity": severity,
                              "message": message, "at": at})
