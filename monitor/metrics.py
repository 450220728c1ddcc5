"""Prometheus metrics of the monitor, in their own registry, served on ``/metrics`` (monitor.web).

Names and labels (low cardinality: stream names, never region coordinates; full maps go to
Redis)::

    vqmon_quality_score{stream}                   last quality score (0-100, higher = better)
    vqmon_quality_score_smoothed{stream}          the same smoothed over time (score_smoothing)
    vqmon_quality_worst_region_score{stream}      lowest cell of the last region map
    vqmon_stream_up{stream}                       1 while frames arrive, 0 when down/stale/ended
    vqmon_last_frame_timestamp_seconds{stream}    wall time of the last decoded frame
    vqmon_frames_decoded_total{stream}
    vqmon_frames_scored_total{stream}
    vqmon_frames_dropped_total{stream,reason}     scorer_behind, decoder_behind, decode_error, score_error, shutdown
    vqmon_reconnects_total{stream}                connection attempts after the first
    vqmon_inference_latency_seconds               histogram, one observation per batch
    vqmon_batch_size                              histogram
    vqmon_build_info{version,model,backend}       1
    vqmon_detector_value{stream,detector}         picture and timing detector values
    vqmon_alert_active{stream,condition,severity} 1 while an alert is active
    vqmon_shard_info{shard,shards}                1 (shard "0", shards "1" when not sharded)
    vqmon_streams_configured                      enabled streams in the configuration
    vqmon_streams_assigned                        of those, the ones this process monitors

Each sink adds its own series to the same registry: ``vqmon_redis_*``
(``monitor.sinks.redis_writer.RedisMetrics``), ``vqmon_mqtt_*`` (``monitor.sinks.mqtt_sink``).
"""
from __future__ import annotations

import math
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

try:  # no *_created series: they double the series count and nobody reads them here
    from prometheus_client import disable_created_metrics
    disable_created_metrics()
except ImportError:  # pragma: no cover
    pass

DROP_REASONS = ("scorer_behind", "decoder_behind", "decode_error", "score_error", "shutdown")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.quality_score = Gauge("vqmon_quality_score", "Last quality score (0-100, higher is better)",
                                   ["stream"], registry=r)
        self.quality_smoothed = Gauge("vqmon_quality_score_smoothed",
                                      "Quality score smoothed over time (EMA, time constant score_smoothing s)",
                                      ["stream"], registry=r)
        self.worst_region = Gauge("vqmon_quality_worst_region_score",
                                  "Score of the worst cell of the last region map (0-100)", ["stream"], registry=r)
        self.stream_up = Gauge("vqmon_stream_up", "1 while the stream delivers frames, else 0", ["stream"], registry=r)
        self.last_frame = Gauge("vqmon_last_frame_timestamp_seconds",
                                "Unix time of the last decoded frame", ["stream"], registry=r)
        self.decoded = Counter("vqmon_frames_decoded_total", "Frames decoded", ["stream"], registry=r)
        self.scored = Counter("vqmon_frames_scored_total", "Frames scored", ["stream"], registry=r)
        self.dropped = Counter("vqmon_frames_dropped_total", "Sampled frames not scored, by reason",
                               ["stream", "reason"], registry=r)
        self.reconnects = Counter("vqmon_reconnects_total", "Connection attempts after the first",
                                  ["stream"], registry=r)
        self.inference_latency = Histogram("vqmon_inference_latency_seconds", "Engine time per batch",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vqmon_batch_size", "Frames per scored batch",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.build_info = Gauge("vqmon_build_info", "vqmon version, model and inference backend",
                                ["version", "model", "backend"], registry=r)
        self.detector = Gauge("vqmon_detector_value", "Last value of each picture/timing detector",
                              ["stream", "detector"], registry=r)
        self.alert_active = Gauge("vqmon_alert_active", "1 while an alert condition is active",
                                  ["stream", "condition", "severity"], registry=r)
        self.shard_info = Gauge("vqmon_shard_info", "This process's share of the configured streams",
                                ["shard", "shards"], registry=r)
        self.streams_configured = Gauge("vqmon_streams_configured", "Enabled streams in the configuration",
                                        registry=r)
        self.streams_assigned = Gauge("vqmon_streams_assigned", "Streams monitored by this process (its shard)",
                                      registry=r)
        self._lock = threading.Lock()
        self._alerts: set[tuple[str, str, str]] = set()

    def init_stream(self, stream: str) -> None:
        """Create a stream's series at 0 so dashboards and rules see them from the start."""
        self.stream_up.labels(stream).set(0)
        self.decoded.labels(stream)
        self.scored.labels(stream)
        self.reconnects.labels(stream)
        for reason in DROP_REASONS:
            self.dropped.labels(stream, reason)

    def set_detectors(self, stream: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            self.detector.labels(stream, k).set(v if not math.isinf(v) else math.copysign(1e308, v))

    def set_alert(self, stream: str, condition: str, severity: str, active: bool) -> None:
        key = (stream, condition, severity)
        with self._lock:
            if active:
                self._alerts.add(key)
            elif key not in self._alerts:
                return
        self.alert_active.labels(*key).set(1 if active else 0)

