"""The alert engine fed from every thread: its active set mirrored into ``vqmon_alert_active``,
its events logged and sent to the sinks, with a thumbnail of the frame on start and update."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .alerts import AlertContext, AlertEngine
from .metrics import Metrics
from .publisher import Publisher
from .stream_state import StreamState

log = logging.getLogger(__name__)


class AlertRouter:
    def __init__(self, streams: dict[str, StreamState], metrics: Metrics, publisher: Publisher):
        self.engine = AlertEngine(stream_rules={name: st.cfg.alert_rules() for name, st in streams.items()})
        self.metrics, self.publisher = metrics, publisher
        self._lock = threading.Lock()  # the engine is not thread-safe; every stream's threads feed it
        self._active: set[tuple[str, str, str]] = set()

    def update(self, st: StreamState, values: dict[str, float], worst_regions=None, image=None,
               frame_size=None) -> None:
        """Feed one sample; ``image`` defaults to the stream's latest frame (its thumbnail goes
        with the events this sample starts)."""
        if st.terminal:
            return
        if image is None:
            image, frame_size = st.last_image, st.last_size
        ctx = AlertContext(score=values.get("score", st.score), worst_regions=worst_regions, frame=image,
                           frame_size=frame_size)
        with self._lock:
            self._route(self.engine.update(st.name, values, time.time(), ctx))

    def remove_stream(self, name: str, reason: str) -> None:
        """A stream that ended or failed: its active alerts are resolved."""
        with self._lock:
            self._route(self.engine.remove_stream(name, time.time(), reason=reason))

    def active_events(self) -> list[dict[str, Any]]:
        """Active alerts with severity, onset (epoch s) and peak value."""
        with self._lock:
            return self.engine.active_events()

    def active_conditions(self, stream: str) -> list[str]:
        return sorted(c for s, c, _ in self._active if s == stream)

    def _route(self, events) -> None:
        """Mirror the engine's active set into metrics and send its events (lock held)."""
        active = self.engine.active()
        for key in active - self._active:
            self.metrics.set_alert(*key, active=True)
        for key in self._active - active:
            self.metrics.set_alert(*key, active=False)
        self._active = set(active)
        for ev in events:
            rec = ev.to_record(include_snapshot=False)
            if ev.snapshot_jpeg:
                rec["snapshot_jpeg"] = ev.snapshot_jpeg
            log.info("alert %s %s on %s (%s): %s", ev.condition, ev.kind, ev.stream, ev.severity, ev.message)
            self.publisher.event(rec)
