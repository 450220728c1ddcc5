"""The running monitor (``vqmon run``, ``monitor.run_command``): starts the parts, runs the
housekeeping loop, stops them; says whether it is healthy.

Data flow::

    worker process per stream (PyAV decode, sampling, swscale resize, detectors)
        -> supervisor thread (watchdog, reconnect accounting)   [monitor.source]
        -> latest-frame slot per stream -> scoring thread         [monitor.batcher]
        -> stream state, metrics, alerts, sinks                   [monitor.tracking]

Each stream's state lives in one ``StreamState`` (monitor.stream_state). Stops on SIGTERM/SIGINT
(workers killed, the batch in flight finished, the sinks flushed), after ``--duration`` seconds,
or when every stream has ended (non-looping files).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import __version__
from .alert_router import AlertRouter
from .batcher import Batcher
from .config import Config
from .credentials import Scrubber
from .metrics import Metrics
from .publisher import Publisher
from .sinks import SinkContext
from .source import StreamWorker
from .stream_state import StreamState
from .tracking import StreamTracker

log = logging.getLogger(__name__)

HEARTBEAT_MAX_AGE = 30.0       # /healthz fails when the housekeeping loop has not run for this long


class Monitor:
    """The running service. ``engines`` can be injected (tests); by default one
    ``engines.engine.QualityEngine`` per model named in the configuration."""

    def __init__(self, config: Config, *, engines: dict[str, Any] | None = None,
                 metrics: Metrics | None = None, announce=None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.engines = engines
        self.announce = announce or (lambda text: print(text, flush=True))
        secrets = [s for section in config.sink_configs().values() for s in section.secrets()]
        # a URL among the sinks' secrets is also redacted in the forms a client may print it
        self.scrub = Scrubber([s.url for s in config.streams] + secrets, extra=secrets)
        self.streams: dict[str, StreamState] = {s.name: StreamState(s) for s in config.assigned_streams}
        self.workers: dict[str, StreamWorker] = {}
        self.publisher = Publisher.from_config(config, SinkContext(
            streams=config.assigned_streams, registry=self.metrics.registry, scrub=self.scrub,
            announce=self.announce, shard=config.shard_assignment))
        self.alerts = AlertRouter(self.streams, self.metrics, self.publisher)
        self.tracker = StreamTracker(self.streams, self.metrics, self.alerts, self.publisher)
        self.batcher: Batcher | None = None
        self.http = None
        self.metrics_address: tuple[str, int] | None = None
        self.heartbeat: float | None = None   # monotonic time the housekeeping loop last ran
        self.stop_event = threading.Event()
        self._started = False
        self.started_at = time.time()

    @property
    def sinks(self):
        return self.publisher.sinks

    # ------------------------------------------------------------------------------------------
    # start / stop
    # ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._describe_shard()
        self._load_engines()
        self.publisher.start(self.streams)
        self._start_http()
        self._start_scoring()
        self.heartbeat = time.monotonic()  # run()'s housekeeping loop takes over from here
        self._start_streams()
        self._started = True

    def _describe_shard(self) -> None:
        cfg, shard = self.config, self.config.shard_assignment
        self.metrics.shard_info.labels(str(shard.index if shard else 0), str(shard.count if shard else 1)).set(1)
        self.metrics.streams_configured.set(len(cfg.active_streams))
        self.metrics.streams_assigned.set(len(self.streams))
        if shard is not None:
            log.info("shard %s: %d of %d stream(s) here", shard, len(self.streams), len(cfg.active_streams))
        for name in self.streams:
            self.metrics.init_stream(name)

    def _load_engines(self) -> None:
        if self.engines is None:
            from engines.engine import QualityEngine
            e = self.config.engine
            self.engines = {}
            for model in self.config.models():
                # several scoring threads: the backend's settings for that (engines.backends)
                self.engines[model] = QualityEngine(model=model, backend=e.options.for_many_callers(),
                                                    weights=e.weights, max_batch=e.max_batch,
                                                    preprocess=e.preprocess)
                log.info("model %s on %s", model, self.engines[model].info.get("backend_detail")
                         or self.engines[model].info.get("backend"))
        for model, eng in self.engines.items():
            info = getattr(eng, "info", {}) or {}
            self.metrics.build_info.labels(__version__, model, str(info.get("backend", "unknown"))).set(1)
            if info and not info.get("trained", True):
                log.warning("model %s runs with UNTRAINED weights: scores are not meaningful", model)

    def _start_http(self) -> None:
        mc = self.config.metrics
        if not mc.enabled:
            return
        from .web.app import LiveApp
        from .web.server import HttpServer
        try:
            self.http = HttpServer(LiveApp(self, live_view=mc.live_view), *mc.address).start()
        except OSError as e:
            raise RuntimeError(f"cannot serve metrics on {mc.listen}: {e.strerror or e}") from None
        self.metrics_address = self.http.address
        log.info("metrics on http://%s:%d/metrics%s", *self.metrics_address, ", live view on /" if mc.live_view else "")

    def _start_scoring(self) -> None:
        e, t = self.config.engine, self.tracker
        self.batcher = Batcher(self.engines, {name: st.cfg.model for name, st in self.streams.items()},
                               max_batch=e.max_batch, max_wait=e.max_wait_ms / 1000.0, on_result=t.on_scored,
                               on_drop=t.on_drop, on_batch=t.on_batch)
        self.batcher.start()
        t.batcher = self.batcher

    def _start_streams(self) -> None:
        for name, st in self.streams.items():
            self.workers[name] = StreamWorker(st.cfg, self.engines[st.cfg.model].view, self.tracker,
                                              scrubber=self.scrub, stream=st)
            self.workers[name].start()

    def stop(self) -> None:
        """Stop everything within a few seconds, flushing the sinks."""
        if not self._started:  # start() failed part way
            self._stop_http()
            self.publisher.stop()
            return
        self._started = False
        t0 = time.monotonic()
        for w in self.workers.values():
            w.stop()
        if self.batcher is not None:
            self.batcher.stop(timeout=2.0)
        for w in self.workers.values():
            w.join(timeout=max(0.3, 1.5 - (time.monotonic() - t0)))
        for name, st in self.streams.items():
            self.metrics.stream_up.labels(name).set(0)
            self.publisher.state(st, state="stopped", up=False)
        self.publisher.stop()
        self._stop_http()
        log.info("stopped in %.1f s", time.monotonic() - t0)

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None

    def run(self, duration: float | None = None, console=None) -> int:
        """Housekeeping loop until stopped, ``duration`` elapsed or every stream ended."""
        t_end = time.monotonic() + duration if duration else None
        while not self.stop_event.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                log.info("duration reached")
                break
            if self._all_ended():
                self._drain(timeout=10.0)  # let the scorer finish the last frames, then stop
                log.info("all streams ended")
                break
            self.tracker.housekeeping()
            self.heartbeat = time.monotonic()
            if console is not None:
                try:
                    console.update()
                except Exception:
                    log.exception("console update failed")
            self.stop_event.wait(0.5)
        if self._all_ended() and any(st.state == "failed" for st in self.streams.values()) \
                and not self.stop_event.is_set():
            return 1
        return 0

    def _all_ended(self) -> bool:
        return bool(self.streams) and all(st.terminal for st in self.streams.values())

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.batcher is not None and self.batcher.pending():
            time.sleep(0.05)
        time.sleep(0.1)

    # ------------------------------------------------------------------------------------------
    # status
    # ------------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return [{"stream": name, "state": st.state, "fps": st.fps if name in self.workers else None,
                 "scored": st.scored, "score": st.score, "worst": st.worst, "dropped": st.dropped,
                 "reconnects": st.reconnects, "alerts": self.alerts.active_conditions(name), "error": st.error}
                for name, st in self.streams.items()]

    def active_alerts(self) -> list[dict[str, Any]]:
        """Active alerts with severity, onset (epoch s) and peak value."""
        return self.alerts.active_events()

    def health(self) -> tuple[bool, list[str]]:
        """Liveness (``/healthz``): the scoring thread runs and the housekeeping loop is not stuck."""
        reasons = []
        if self.batcher is None or not self.batcher.alive:
            reasons.append("the scoring thread is not running")
        age = None if self.heartbeat is None else time.monotonic() - self.heartbeat
        if age is None:
            reasons.append("the monitor has not started")
        elif age > HEARTBEAT_MAX_AGE:
            reasons.append(f"the housekeeping loop last ran {age:.0f} s ago")
        return not reasons, reasons

    def readiness(self) -> tuple[bool, list[str]]:
        """Readiness (``/readyz``): engines loaded and, when streams are assigned, one of them up."""
        reasons = []
        if not self._started or not self.engines:
            reasons.append("the quality engines are not loaded yet")
        states = [st.state for st in self.streams.values()]
        if states and "up" not in states:
            counts = {s: states.count(s) for s in sorted(set(states))}
            reasons.append("no assigned stream is up (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
        return not reasons, reasons

    def header(self) -> str:
        parts = [f"vqmon {__version__}"]
        shard = self.config.shard_assignment
        if shard is not None:
            parts.append(f"shard {shard} ({len(self.streams)} of {len(self.config.active_streams)} streams)")
        for model, eng in (self.engines or {}).items():
            info = getattr(eng, "info", {}) or {}
            parts.append(f"{model}@{info.get('backend', '?')}")
        for name, s in self.publisher.statuses().items():
            rejecting = ", writes REJECTED" if s.connected and s.write_error else ""
            parts.append(f"{name} {'up' if s.connected else 'DOWN'}{rejecting} (buffered {s.buffered}, lost {s.lost})")
        if self.metrics_address:
            base = f"http://{self.metrics_address[0]}:{self.metrics_address[1]}"
            parts.append(f"live view {base}/" if self.config.metrics.live_view else f"metrics {base}/metrics")
        return "  ".join(parts)
