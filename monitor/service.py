"""``vqmon run``: live ingest -> batched scoring -> Redis and Prometheus; ``vqmon check-config``.

Data flow::

    worker process per stream (PyAV decode, sampling, swscale resize, detectors)
        -> supervisor thread (watchdog, reconnect accounting)   [monitor.source]
        -> latest-frame slot per stream -> scoring thread         [monitor.batcher]
        -> metrics (/metrics), alert engine, Redis sink thread    [monitor.metrics, .alerts, .sinks]

Stops on SIGTERM/SIGINT (workers killed, the batch in flight finished, Redis buffer flushed
for ``redis.flush_timeout`` s), after ``--duration`` seconds, or when every stream has ended
(non-looping files).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.backends import backend_names

from . import __version__
from .config import Config, ConfigError, Scrubber, StreamConfig, config_from_dict, stream_name_for
from .metrics import Metrics
from .smoothing import ScoreSmoother
from .source import FrameMessage, StreamListener, StreamWorker

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
TERMINAL_STATES = {"ended", "failed"}
HISTORY_LEN = 300              # recent scores kept per stream for the live view
HEARTBEAT_MAX_AGE = 30.0       # /healthz fails when the housekeeping loop has not run for this long


@dataclass
class StreamRuntime:
    cfg: StreamConfig
    worker: StreamWorker | None = None
    state: str = "starting"
    error: str | None = None
    scored: int = 0
    dropped: int = 0
    score: float | None = None
    smoothed: float | None = None
    worst: float | None = None
    last_ts: float | None = None          # decode time of the last scored frame
    last_decoded_wall: float | None = None
    started: float = field(default_factory=time.time)
    timing: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, float] = field(default_factory=dict)
    down_open: bool = False               # a stream_down event was sent and not resolved
    logged_error: str | None = None
    last_image: Any = None                # latest sampled SxS frame (for alert snapshots)
    last_size: tuple[int, int] | None = None
    logged_at: float = 0.0
    was_up: bool = False
    # (decode time, score, worst cell, smoothed score) of the last HISTORY_LEN scored frames, for the live view
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    last_scored: tuple[int, Any] | None = None  # (scored count, ScoredFrame), replaced as a whole
    smoother: ScoreSmoother = field(init=False)

    def __post_init__(self) -> None:
        self.smoother = ScoreSmoother(self.cfg.score_smoothing)


class Monitor(StreamListener):
    """The running service. ``engines`` can be injected (tests); by default one
    ``engines.engine.QualityEngine`` per model named in the configuration."""

    def __init__(self, config: Config, *, engines: dict[str, Any] | None = None,
                 metrics: Metrics | None = None, announce=None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.engines = engines
        self.announce = announce or (lambda text: print(text, flush=True))
        self.scrub = Scrubber([s.url for s in config.streams] + ([config.redis.url] if config.redis.url else []),
                              extra=[config.redis.password] if config.redis.password else [])
        self.streams: dict[str, StreamRuntime] = {s.name: StreamRuntime(s) for s in config.assigned_streams}
        self.sink = None
        self.embedded_redis = None
        self.batcher = None
        self.alerts = None
        self._alert_lock = threading.Lock()
        self._active_alerts: set[tuple[str, str, str]] = set()
        self.metrics_address: tuple[str, int] | None = None
        self.http = None
        self.heartbeat: float | None = None   # monotonic time the housekeeping loop last ran
        self.stop_event = threading.Event()
        self._started = False
        self.started_at = time.time()

    # ------------------------------------------------------------------------------------------
    # start / stop
    # ------------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        shard = cfg.shard_assignment
        self.metrics.shard_info.labels(str(shard.index if shard else 0), str(shard.count if shard else 1)).set(1)
        self.metrics.streams_configured.set(len(cfg.active_streams))
        self.metrics.streams_assigned.set(len(self.streams))
        if shard is not None:
            log.info("shard %s: %d of %d stream(s) here", shard, len(self.streams), len(cfg.active_streams))
        for name in self.streams:
            self.metrics.init_stream(name)
        if self.engines is None:
            self.engines = self._make_engines()
        for model, eng in self.engines.items():
            info = getattr(eng, "info", {}) or {}
            self.metrics.build_info.labels(__version__, model, str(info.get("backend", "unknown"))).set(1)
            if info and not info.get("trained", True):
                log.warning("model %s runs with UNTRAINED weights: scores are not meaningful", model)
        self._make_alerts()
        if cfg.redis.enabled:
            self._start_redis()
        if cfg.metrics.enabled:
            host, port = cfg.metrics.address
            from .web.app import LiveApp
            from .web.server import HttpServer
            try:
                self.http = HttpServer(LiveApp(self, live_view=cfg.metrics.live_view), host, port).start()
            except OSError as e:
                raise RuntimeError(f"cannot serve metrics on {cfg.metrics.listen}: {e.strerror or e}") from None
            self.metrics_address = self.http.address
            log.info("metrics on http://%s:%d/metrics%s", *self.metrics_address,
                     ", live view on /" if cfg.metrics.live_view else "")
        from .batcher import Batcher
        models = {name: rt.cfg.model for name, rt in self.streams.items()}
        self.batcher = Batcher(self.engines, models, max_batch=cfg.engine.max_batch,
                               max_wait=cfg.engine.max_wait_ms / 1000.0, on_result=self._on_scored,
                               on_drop=self._on_drop, on_batch=self._on_batch)
        self.batcher.start()
        self.heartbeat = time.monotonic()  # run()'s housekeeping loop takes over from here
        for name, rt in self.streams.items():
            rt.worker = StreamWorker(rt.cfg, self.engines[rt.cfg.model].view, self, scrubber=self.scrub)
            rt.worker.start()
        self._started = True

    def _make_engines(self) -> dict[str, Any]:
        from engines.engine import QualityEngine
        engines = {}
        e = self.config.engine
        for model in self.config.models():
            engines[model] = QualityEngine(model=model, backend=e.options, weights=e.weights,
                                           max_batch=e.max_batch, preprocess=e.preprocess)
            log.info("model %s on %s", model, engines[model].info.get("backend_detail")
                     or engines[model].info.get("backend"))
        return engines

    def _make_alerts(self) -> None:
        try:
            from .alerts import AlertEngine
        except Exception as e:  # pragma: no cover - alerts are optional
            log.warning("alert engine unavailable: %s", e)
            return
        self.alerts = AlertEngine(stream_rules={n: rt.cfg.alert_rules() for n, rt in self.streams.items()},
                                  snapshots=False)

    def _start_redis(self) -> None:
        from .sinks.redis_sink import RedisSink
        rc = self.config.redis
        url = rc.url
        if url is None:
            from .redis_server import EmbeddedRedis
            self.embedded_redis = EmbeddedRedis(binary=rc.embedded.binary, port=rc.embedded.port,
                                                unix_socket=rc.embedded.unix_socket).start()
            url = self.embedded_redis.url
            first = next(iter(self.streams), "<stream>")
            cli, pre = self.embedded_redis.cli_command(), rc.key_prefix
            self.announce(f"vqmon: no Redis configured: started a private redis-server at {url} "
                          f"(stopped on exit). Read it with:\n"
                          f"  {cli} XREVRANGE {pre}:{first}:records + - COUNT 1\n"
                          f"  {cli} HGETALL {pre}:{first}:state\n"
                          f"  {cli} XREVRANGE {pre}:events + - COUNT 10")
        self.sink = RedisSink(url, username=rc.username, password=rc.password, prefix=rc.key_prefix,
                              maxlen=rc.maxlen, events_maxlen=rc.events_maxlen, buffer_size=rc.buffer_size,
                              socket_timeout=rc.socket_timeout, metrics=self.metrics, scrub=self.scrub)
        self.sink.register_streams(self.streams)
        self.sink.start()
        for name, rt in self.streams.items():
            self._push_state(rt, {"state": "starting", "up": 0})

    def stop(self) -> None:
        """Stop everything within a few seconds, flushing the Redis buffer."""
        if not self._started:  # start() failed part way
            self._stop_http()
            self._cleanup_redis()
            return
        self._started = False
        t0 = time.monotonic()
        workers = [rt.worker for rt in self.streams.values() if rt.worker is not None]
        for w in workers:
            w.stop()
        if self.batcher is not None:
            self.batcher.stop(timeout=2.0)
        for w in workers:
            w.join(timeout=max(0.3, 1.5 - (time.monotonic() - t0)))
        now = time.time()
        for name, rt in self.streams.items():
            self.metrics.stream_up.labels(name).set(0)
            if self.sink is not None:
                self._push_state(rt, {"state": "stopped", "up": 0, "updated": f"{now:.3f}"})
        if self.sink is not None:
            self.sink.stop(flush_timeout=self.config.redis.flush_timeout)
        self._stop_http()
        self._cleanup_redis()
        log.info("stopped in %.1f s", time.monotonic() - t0)

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None

    def _cleanup_redis(self) -> None:
        if self.embedded_redis is not None:
            self.embedded_redis.cleanup()
            self.embedded_redis = None

    def run(self, duration: float | None = None, console=None) -> int:
        """Housekeeping loop until stopped, ``duration`` elapsed or every stream ended."""
        t_end = time.monotonic() + duration if duration else None
        while not self.stop_event.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                log.info("duration reached")
                break
            if self.streams and all(rt.state in TERMINAL_STATES for rt in self.streams.values()):
                # let the scorer finish the last frames, then stop
                self._drain(timeout=10.0)
                log.info("all streams ended")
                break
            self._housekeeping()
            self.heartbeat = time.monotonic()
            if console is not None:
                try:
                    console.update()
                except Exception:
                    log.exception("console update failed")
            self.stop_event.wait(0.5)
        if self.streams and all(rt.state in TERMINAL_STATES for rt in self.streams.values()) \
                and any(rt.state == "failed" for rt in self.streams.values()) and not self.stop_event.is_set():
            return 1
        return 0

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.batcher is not None and self.batcher.pending():
            time.sleep(0.05)
        time.sleep(0.1)

    # ------------------------------------------------------------------------------------------
    # worker callbacks (supervisor threads)
    # ------------------------------------------------------------------------------------------
    def on_state(self, stream: str, state: str, up: bool, detail: dict) -> None:
        rt = self.streams[stream]
        prev = rt.state
        rt.state = state
        self.metrics.stream_up.labels(stream).set(1 if up else 0)
        err = detail.get("error")
        if err:
            rt.error = err
        now = time.time()
        if up:
            rt.error = None
            rt.logged_error = None
            if rt.down_open:
                rt.down_open = False
                self._event({"stream": stream, "condition": "stream_down", "kind": "resolved",
                             "severity": "critical", "message": f"stream {stream} is up again", "at": now})
            rt.was_up = True
        elif state in ("error", "stale", "failed") and not rt.down_open:
            rt.down_open = True
            self._event({"stream": stream, "condition": "stream_down", "kind": "start", "severity": "critical",
                         "message": f"stream {stream} is down: {err or state}", "at": now})
        elif state == "ended":
            if rt.down_open:
                rt.down_open = False
            self._event({"stream": stream, "condition": "stream_ended", "kind": "info", "severity": "info",
                         "message": f"stream {stream} reached the end of its input", "at": now})
        if err and state in ("error", "failed", "stale"):
            # the same error again (a source that stays away) is logged once a minute
            repeat = err == rt.logged_error and now - rt.logged_at < 60.0
            level = logging.DEBUG if repeat else logging.ERROR if state == "failed" else logging.WARNING
            if not repeat:
                rt.logged_error, rt.logged_at = err, now
            retry = detail.get("retry_in")
            log.log(level, "stream %s: %s%s", stream, err, f" (retry in {retry:.1f} s)" if retry else "")
        elif up and prev != "up":
            log.info("stream %s: up", stream)
        if state in TERMINAL_STATES and self.alerts is not None:
            with self._alert_lock:
                self._handle_alert_events(self.alerts.remove_stream(stream, now, reason=f"stream {state}"))
        if self.sink is not None:
            self._push_state(rt, {"state": state, "up": int(up), "error": rt.error or "", "updated": f"{now:.3f}"})

    def on_frame(self, msg: FrameMessage) -> None:
        rt = self.streams[msg.stream]
        rt.last_decoded_wall = max(rt.last_decoded_wall or 0.0, msg.ts)
        rt.last_image, rt.last_size = msg.image, (msg.width, msg.height)
        if msg.detectors:
            self.on_detectors(msg.stream, msg.detectors, msg.pts, msg.ts)
        if self.batcher is not None:
            self.batcher.submit(msg)

    def on_decoded(self, stream: str, count: int, wall_time: float) -> None:
        rt = self.streams[stream]
        rt.last_decoded_wall = wall_time
        self.metrics.decoded.labels(stream).inc(count)
        self.metrics.last_frame.labels(stream).set(wall_time)

    def on_detectors(self, stream: str, values: dict[str, float], pts: float | None, ts: float) -> None:
        rt = self.streams[stream]
        clean = {k: float(v) for k, v in values.items() if v is not None}
        rt.detectors.update(clean)
        self.metrics.set_detectors(stream, clean)
        self._alert_update(stream, clean)

    def on_timing(self, stream: str, values: dict[str, float]) -> None:
        self.streams[stream].timing = {k: float(v) for k, v in values.items() if v is not None}

    def on_decode_errors(self, stream: str, count: int) -> None:
        self._on_drop(stream, "decode_error", count)

    def on_reconnect(self, stream: str) -> None:
        self.metrics.reconnects.labels(stream).inc()

    # ------------------------------------------------------------------------------------------
    # scorer callbacks (scoring thread)
    # ------------------------------------------------------------------------------------------
    def _on_drop(self, stream: str, reason: str, count: int) -> None:
        self.metrics.dropped.labels(stream, reason).inc(count)
        if reason != "decode_error":
            self.streams[stream].dropped += count

    def _on_batch(self, model: str, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_latency.observe(seconds)

    def _on_scored(self, r) -> None:
        from .sinks.redis_sink import dumps_detectors, encode_map
        f = r.frame
        rt = self.streams[f.stream]
        rm = r.region_map
        worst_r, worst_c, worst_v = rm.worst(1)[0]
        rt.scored += 1
        rt.score, rt.worst, rt.last_ts = r.score, worst_v, f.ts
        rt.smoothed = rt.smoother.update(f.ts, r.score)
        rt.history.append((f.ts, r.score, worst_v, rt.smoothed))
        rt.last_scored = (rt.scored, r)
        m = self.metrics
        m.quality_score.labels(f.stream).set(r.score)
        m.quality_smoothed.labels(f.stream).set(rt.smoothed)
        m.worst_region.labels(f.stream).set(worst_v)
        m.scored.labels(f.stream).inc()
        if self.sink is not None:
            rows, cols = rm.shape
            fields = {
                "ts": f"{math.floor(f.ts * 1000) / 1000:.3f}", "pts": f"{f.pts:.3f}", "score": f"{r.score:.2f}",
                "score_smoothed": f"{rt.smoothed:.2f}", "worst": f"{worst_v:.2f}",
                "worst_cell": f"{worst_r},{worst_c}", "worst_box": ",".join(map(str, rm.cell_box(worst_r, worst_c))),
                "map": encode_map(rm.values), "map_shape": f"{rows},{cols}",
                "frame_size": f"{f.width},{f.height}", "detectors": dumps_detectors(f.detectors),
                "model": r.model, "seq": str(f.seq),
            }
            self.sink.put_record(f.stream, fields, ts=f.ts)
            self._push_state(rt, {"state": rt.state, "up": int(rt.state == "up"), "ts": fields["ts"],
                                  "pts": fields["pts"], "score": fields["score"],
                                  "score_smoothed": fields["score_smoothed"], "worst": fields["worst"],
                                  "worst_box": fields["worst_box"], "frame_size": fields["frame_size"],
                                  "updated": f"{time.time():.3f}"})
        self._alert_update(f.stream, {"score": r.score, "worst_region": worst_v},
                           worst_regions=rm.worst(3), image=f.image, frame_size=(f.width, f.height))

    # ------------------------------------------------------------------------------------------
    # alerts, events, state
    # ------------------------------------------------------------------------------------------
    def _alert_update(self, stream: str, values: dict[str, float], worst_regions=None, image=None,
                      frame_size=None) -> None:
        if self.alerts is None:
            return
        from .alerts import AlertContext
        rt = self.streams[stream]
        if rt.state in TERMINAL_STATES:
            return
        ctx = AlertContext(score=values.get("score", rt.score), worst_regions=worst_regions)
        if image is None:
            image, frame_size = rt.last_image, rt.last_size
        with self._alert_lock:
            events = self.alerts.update(stream, values, time.time(), ctx)
            if events and image is not None:
                jpeg = None
                for ev in events:
                    if ev.kind != "resolved":
                        jpeg = jpeg or _snapshot(image, frame_size)
                        ev.snapshot_jpeg = jpeg
            self._handle_alert_events(events)

    def _handle_alert_events(self, events) -> None:
        """Mirror the engine's active set into metrics and send events (alert lock held)."""
        active = self.alerts.active() if self.alerts is not None else set()
        for key in active - self._active_alerts:
            self.metrics.set_alert(*key, active=True)
        for key in self._active_alerts - active:
            self.metrics.set_alert(*key, active=False)
        self._active_alerts = set(active)
        for ev in events:
            rec = ev.to_record(include_snapshot=False)
            if ev.snapshot_jpeg:
                rec["snapshot_jpeg"] = ev.snapshot_jpeg
            log.info("alert %s %s on %s (%s): %s", ev.condition, ev.kind, ev.stream, ev.severity, ev.message)
            self._event(rec)

    def _event(self, fields: dict[str, Any]) -> None:
        if self.sink is None:
            return
        out: dict[str, Any] = {"ts": f"{time.time():.3f}"}
        for k, v in fields.items():
            if v is None:
                continue
            if isinstance(v, (bytes, bytearray)):
                out[k] = bytes(v)
            elif isinstance(v, (list, tuple, dict)):
                out[k] = json.dumps(v, separators=(",", ":"))
            elif isinstance(v, float):
                out[k] = f"{v:.3f}" if math.isfinite(v) else ""
            else:
                out[k] = self.scrub(v) if isinstance(v, str) else str(v)
        self.sink.put_event(out)

    def _push_state(self, rt: StreamRuntime, fields: dict[str, Any]) -> None:
        if self.sink is None:
            return
        w = rt.worker
        base = {"stream": rt.cfg.name, "url": rt.cfg.redacted_url, "model": rt.cfg.model,
                "sample_rate": f"{rt.cfg.sample_rate:g}", "scored": str(rt.scored), "dropped": str(rt.dropped),
                "reconnects": str(w.reconnects if w else 0), "fps": f"{w.fps:.2f}" if w else "0",
                "decoded": str(w.decoded if w else 0)}
        if self.config.shard:
            base["shard"] = self.config.shard
        base.update({k: str(v) for k, v in fields.items() if v is not None})
        self.sink.set_state(rt.cfg.name, base, self.config.state_ttl(rt.cfg))

    def _housekeeping(self) -> None:
        now = time.time()
        for name, rt in self.streams.items():
            if rt.state in TERMINAL_STATES or rt.state == "stopped":
                continue
            timing = dict(rt.timing)
            # a stall needs a stream that was delivering: one that never came up is not
            # stalled but down, which stream_down reports once its worker gives up opening it
            ref = rt.last_decoded_wall
            timing["stall_seconds"] = max(0.0, now - ref) if ref is not None else math.nan
            if rt.state != "up":
                timing.pop("fps", None)
                timing.pop("fps_ratio", None)
            self.metrics.set_detectors(name, timing)
            self._alert_update(name, timing)
            if rt.state != "up" and self.sink is not None:
                self._push_state(rt, {"state": rt.state, "up": 0, "error": rt.error or "",
                                      "updated": f"{now:.3f}"})

    # ------------------------------------------------------------------------------------------
    # status
    # ------------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        rows = []
        for name, rt in self.streams.items():
            w = rt.worker
            alerts = sorted(c for s, c, _ in self._active_alerts if s == name)
            rows.append({"stream": name, "state": rt.state, "fps": (w.fps if w else None),
                         "scored": rt.scored, "score": rt.score, "worst": rt.worst, "dropped": rt.dropped,
                         "reconnects": w.reconnects if w else 0, "alerts": alerts, "error": rt.error})
        return rows

    def active_alerts(self) -> list[dict[str, Any]]:
        """Active alerts with severity, onset (epoch s) and peak value."""
        if self.alerts is None:
            return []
        with self._alert_lock:
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
        states = [rt.state for rt in self.streams.values()]
        if states and "up" not in states:
            counts = {st: states.count(st) for st in sorted(set(states))}
            reasons.append("no assigned stream is up (" + ", ".join(f"{n} {st}" for st, n in counts.items()) + ")")
        return not reasons, reasons

    def header(self) -> str:
        parts = [f"vqmon {__version__}"]
        shard = self.config.shard_assignment
        if shard is not None:
            parts.append(f"shard {shard} ({len(self.streams)} of {len(self.config.active_streams)} streams)")
        for model, eng in (self.engines or {}).items():
            info = getattr(eng, "info", {}) or {}
            parts.append(f"{model}@{info.get('backend', '?')}")
        if self.sink is not None:
            rejecting = ", writes REJECTED" if self.sink.connected and self.sink.write_error else ""
            parts.append(f"redis {'up' if self.sink.connected else 'DOWN'}{rejecting} (buffered {self.sink.buffered}, "
                         f"lost {self.sink.stats.lost})")
        if self.metrics_address:
            base = f"http://{self.metrics_address[0]}:{self.metrics_address[1]}"
            parts.append(f"live view {base}/" if self.config.metrics.live_view else f"metrics {base}/metrics")
        return "  ".join(parts)


def _snapshot(image, frame_size) -> bytes | None:
    """JPEG thumbnail of a scored frame, with the original aspect ratio restored."""
    try:
        from PIL import Image
        import io
        img = Image.fromarray(image)
        if frame_size:
            w, h = frame_size
            tw = 320
            th = max(2, int(round(tw * h / max(1, w))))
            img = img.resize((tw, th), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=75)
        return buf.getvalue()
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

def demo_sources() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.glob("*.mp4"))


def build_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> Config:
    """Config from ``-c FILE`` and/or sources given on the command line, with CLI overrides."""
    from .config import load_yaml
    raw: dict[str, Any] = {}
    if args.config:
        try:
            text = Path(args.config).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{args.config}: cannot read: {e.strerror or e}") from None
        raw = load_yaml(text, source=args.config) or {}  # ConfigError with the position
        if not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: the top level must be a mapping")
    sources = list(args.sources or [])
    if args.demo:
        demo = demo_sources()
        if not demo:
            raise ConfigError(f"no sample clips found in {SAMPLES_DIR}")
        sources += [str(p) for p in demo]
    if sources:
        streams = list(raw.get("streams") or [])
        taken = {s.get("name") for s in streams if isinstance(s, dict)}
        for src in sources:
            s: dict[str, Any] = {"name": stream_name_for(src, taken), "url": src}
            if args.demo or args.loop:
                s["loop"] = True
            streams.append(s)
        raw["streams"] = streams
    if not raw.get("streams"):
        raise ConfigError("no stream to monitor: give URLs or files, -c CONFIG, or --demo")
    defaults = raw.setdefault("defaults", {}) if isinstance(raw.get("defaults", {}), dict) else raw["defaults"]
    if args.sample_rate is not None:
        defaults["sample_rate"] = args.sample_rate
        for s in raw["streams"]:
            if isinstance(s, dict):
                s.pop("sample_rate", None)
    if args.model:
        defaults["model"] = args.model
        for s in raw["streams"]:
            if isinstance(s, dict):
                s.pop("model", None)
    engine = raw.setdefault("engine", {})
    if isinstance(engine, dict):
        if args.backend:
            engine["backend"] = args.backend
        if args.max_batch:
            engine["max_batch"] = args.max_batch
        if args.weights:
            engine["weights"] = None if args.weights == "none" else args.weights
    _override_endpoint(raw, "redis", "url", args.redis)
    _override_endpoint(raw, "metrics", "listen", args.metrics)
    if args.shard:
        raw["shard"] = None if args.shard == "none" else args.shard
    if args.no_console:
        raw["console"] = False
    return config_from_dict(raw, env=env, source=args.config or "<command line>")


def _override_endpoint(raw: dict, section: str, key: str, value: str | None) -> None:
    """``--redis``/``--metrics``: ``none`` disables the section, anything else sets its address."""
    cfg = raw.setdefault(section, {})
    if not isinstance(cfg, dict) or not value:
        return
    if value == "none":
        cfg["enabled"] = False
    else:
        cfg[key] = value
        cfg["enabled"] = True


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="URL_OR_FILE",
                   help="streams to monitor (quick form; names are derived from the URLs/files). "
                        "A password in a URL here is visible to every local user in `ps` and in "
                        "the shell history: put it in a config file (-c) as ${ENV}, e.g. "
                        "url: rtsp://user:${CAM_PW}@host/path")
    p.add_argument("-c", "--config", help="YAML configuration (see deploy/vqmon.example.yaml)")
    p.add_argument("--demo", action="store_true",
                   help="monitor the sample clips shipped in monitor/samples (looped, real time)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--sample-rate", type=float, default=None, metavar="HZ",
                   help="frames scored per second per stream (overrides the config)")
    p.add_argument("--model", default=None, help="quality model for all streams (overrides the config)")
    p.add_argument("--backend", default=None, choices=backend_names(), help="inference backend (overrides the config)")
    p.add_argument("--weights", default=None, help="weights file, 'default' (shipped) or 'none' (untrained)")
    p.add_argument("--max-batch", type=int, default=None, help="largest scoring batch")
    p.add_argument("--loop", action="store_true", help="quick form: loop files at EOF")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="redis://, rediss:// or unix:// URL; 'none' disables Redis "
                        "(default: the config's, else a private redis-server)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="address of /metrics (default 127.0.0.1:9108); 'none' disables it")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="monitor only share I of N (0-based) of the configured streams, by a stable "
                        "hash of their names; 'auto' reads VQMON_SHARD_INDEX (or the StatefulSet "
                        "ordinal in HOSTNAME) and VQMON_SHARD_COUNT; 'none' monitors all")
    p.add_argument("--no-console", action="store_true", help="no live status table")


def register(subparsers) -> None:
    """Add ``run`` and ``check-config`` to the ``vqmon`` command line."""
    p = subparsers.add_parser("run", help="monitor streams: score frames, write Redis, serve /metrics",
                              description="Monitor live streams and files: sampled frames are scored by "
                              "the quality model; records go to Redis, metrics to /metrics. "
                              "With no Redis configured a private redis-server is started. "
                              "`vqmon run --demo` monitors the shipped sample clips.")
    _add_run_args(p)
    p.set_defaults(func=cmd_run, heavy=True)
    c = subparsers.add_parser("check-config", help="validate a configuration file and print a summary")
    c.add_argument("config", help="YAML configuration file")
    # models, backend and URL protocols are always checked now (monitor.preflight); kept for old scripts
    c.add_argument("--models", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_check_config)


def _preflight_failed(cfg: Config, source: str, prefix: str) -> bool:
    """Print what ``cfg`` asks for that this installation lacks (monitor.preflight); True if any."""
    from .preflight import check
    problems = check(cfg)
    if problems:
        print(f"{prefix}invalid configuration: {source}: {len(problems)} error(s):\n  "
              + "\n  ".join(problems), file=sys.stderr)
    return bool(problems)


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import load_config
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"invalid configuration: {e}", file=sys.stderr)
        return 2
    if _preflight_failed(cfg, args.config, ""):
        return 2
    print(f"{args.config}: OK")
    print(cfg.summary())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = build_config(args)
    except ConfigError as e:
        print(f"vqmon run: invalid configuration: {e}", file=sys.stderr)
        return 2
    if _preflight_failed(cfg, args.config or "<command line>", "vqmon run: "):
        return 2
    mlog = logging.getLogger("monitor")
    if mlog.level == logging.NOTSET or mlog.level > getattr(logging, cfg.log_level.upper()):
        mlog.setLevel(getattr(logging, cfg.log_level.upper()))
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for line in cfg.summary().splitlines():
        log.info("%s", line)
    monitor = Monitor(cfg)
    stop = monitor.stop_event

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            os._exit(130)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            monitor.start()
        except Exception as e:
            log.debug("start failed", exc_info=True)
            print(f"vqmon run: cannot start: {monitor.scrub(e)}", file=sys.stderr)
            monitor.stop()
            return 2
        from .console import LiveConsole, LogSummary, console_available
        use_console = cfg.console and console_available()
        view = LiveConsole(monitor) if use_console else LogSummary(monitor)
        with view:
            rc = monitor.run(duration=args.duration, console=view)
        return rc
    finally:
        monitor.stop()
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m monitor.service run ...``); ``vqmon`` uses monitor.cli."""
    parser = argparse.ArgumentParser(prog="vqmon")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
