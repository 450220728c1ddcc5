"""The Redis sink's writer: records, latest states and events written from a background thread,
buffered (bounded) while Redis is away. ``redis_sink`` decides what goes into them (the layout,
docs/redis.md).

Redis down: the monitor goes on decoding and scoring; records wait in a bounded buffer and
are written when Redis is back (explicit entry ids make a retried write idempotent); the
oldest are dropped when the buffer is full and counted in ``vqmon_redis_records_lost_total``.

Redis up but rejecting writes (full under ``maxmemory`` with ``noeviction``, a read-only
replica): each rejected write is counted by kind in ``vqmon_redis_writes_rejected_total{kind}``
(record, state, event), ``vqmon_redis_write_errors`` is 1 and ``write_error`` holds the
reason until a write round goes through, and the log gets the first rejection and then a
summary every ``error_log_interval`` seconds (``redis_errors.RejectionLog``).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter as CounterMetric, Gauge, Histogram

from ..metrics import LATENCY_BUCKETS
from ..sampler import Backoff
from .redis_errors import KINDS, RejectionLog, connection_error_text, password_given

log = logging.getLogger(__name__)


class RedisMetrics:
    """The Redis sink's series (``vqmon_redis_*``), in the monitor's registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.lost = CounterMetric("vqmon_redis_records_lost_total",
                                  "Records never written to Redis (buffer overflow or exit)", registry=r)
        self.buffered = Gauge("vqmon_redis_buffered_records", "Records waiting to be written to Redis", registry=r)
        self.written = CounterMetric("vqmon_redis_records_written_total", "Records written to Redis", registry=r)
        self.up = Gauge("vqmon_redis_up", "1 while the Redis connection works", registry=r)
        self.write_errors = Gauge("vqmon_redis_write_errors",
                                  "1 while Redis rejects writes (e.g. maxmemory reached), else 0", registry=r)
        self.rejected = CounterMetric("vqmon_redis_writes_rejected_total",
                                      "Writes Redis rejected (connection up), by kind: record, state, event",
                                      ["kind"], registry=r)
        for kind in KINDS:
            self.rejected.labels(kind)
        self.decode_to_redis = Histogram("vqmon_decode_to_redis_seconds",
                                         "Time from frame decode to its record acknowledged by Redis",
                                         buckets=LATENCY_BUCKETS, registry=r)


@dataclass
class _Record:
    stream: str
    fields: dict[str, Any]
    ts: float
    entry_id: str
    attempts: int = 0


@dataclass
class _Event:
    fields: dict[str, Any]
    attempts: int = 0


@dataclass
class SinkStats:
    written: int = 0
    lost: int = 0
    duplicates: int = 0
    events_written: int = 0
    events_lost: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=100_000))


class RedisWriter:
    """Writes records, state and events from a background thread; never blocks the caller."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 prefix: str = "vqmon", maxlen: int = 10_000, events_maxlen: int = 10_000,
                 buffer_size: int = 10_000, socket_timeout: float = 2.0, metrics: RedisMetrics | None = None,
                 scrub=None, batch_size: int = 256, error_log_interval: float = 30.0):
        self.url = url
        self.username, self.password = username, password
        self.prefix = prefix
        self.maxlen, self.events_maxlen = int(maxlen), int(events_maxlen)
        self.buffer_size = int(buffer_size)
        self.socket_timeout = float(socket_timeout)
        self.metrics = metrics
        self.scrub = scrub or (lambda s: str(s))
        self.batch_size = batch_size
        self.stats = SinkStats()
        self._records: deque[_Record] = deque()
        self._inflight: list[_Record] = []
        self._events: deque[_Event] = deque(maxlen=10_000)
        self._states: dict[str, tuple[dict[str, Any], float]] = {}
        self._streams: set[str] = set()
        self._streams_registered = False
        self._last_id: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client = None
        self.connected = False
        self.last_error: str | None = None
        self.write_error: str | None = None  # why Redis rejects writes, while it does
        self._rejections = RejectionLog(log, every=error_log_interval, scrub=self.scrub)
        self._flush_deadline = float("inf")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="redis-sink", daemon=True)

    # -- keys -------------------------------------------------------------------------------
    def records_key(self, stream: str) -> str:
        return f"{self.prefix}:{stream}:records"

    def state_key(self, stream: str) -> str:
        return f"{self.prefix}:{stream}:state"

    @property
    def events_key(self) -> str:
        return f"{self.prefix}:events"

    @property
    def streams_key(self) -> str:
        return f"{self.prefix}:streams"

    # -- producer API (any thread) --------------------------------------------------------------
    def register_streams(self, names) -> None:
        with self._lock:
            self._streams.update(names)
            self._streams_registered = False
        self._wake.set()

    def put_record(self, stream: str, fields: dict[str, Any], ts: float) -> None:
        with self._lock:
            if self._closed:  # after stop(): nobody will write it
                self._lost(1)
                return
            ms = int(ts * 1000)
            last = self._last_id.get(stream)
            if last is not None and ms <= last[0]:
                ms, seq = last[0], last[1] + 1
            else:
                seq = 0
            self._last_id[stream] = (ms, seq)
            self._records.append(_Record(stream, fields, ts, f"{ms}-{seq}"))
            self._trim_locked()
        self._wake.set()

    def put_event(self, fields: dict[str, Any]) -> None:
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.stats.events_lost += 1
            self._events.append(_Event({k: v for k, v in fields.items() if v is not None}))
        self._wake.set()

    def set_state(self, stream: str, fields: dict[str, Any], ttl: float) -> None:
        """Merge fields into the stream's pending state (only the latest is written)."""
        with self._lock:
            old = self._states.get(stream)
            merged = dict(old[0]) if old else {}
            merged.update({k: v for k, v in fields.items() if v is not None})
            self._states[stream] = (merged, ttl)
        self._wake.set()

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._records) + len(self._inflight)

    def _trim_locked(self) -> None:
        while len(self._records) + len(self._inflight) > self.buffer_size and self._records:
            self._records.popleft()
            self._lost(1)
        if self.metrics is not None:
            self.metrics.buffered.set(len(self._records) + len(self._inflight))

    def _lost(self, n: int) -> None:
        self.stats.lost += n
        if self.metrics is not None:
            self.metrics.lost.inc(n)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Flush what is buffered for up to ``flush_timeout`` s; count the rest as lost."""
        self._flush_deadline = time.monotonic() + flush_timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(flush_timeout + self.socket_timeout + 1.0)
        with self._lock:
            self._closed = True
            left = len(self._records) + len(self._inflight)
            self._records.clear()
            self._inflight = []
            if left:
                self._lost(left)
                log.warning("redis: %d record(s) could not be written before exit", left)
            if self.metrics is not None:
                self.metrics.buffered.set(0)
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass

    # -- writer thread ------------------------------------------------------------------------------
    def _connect(self):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        kw: dict[str, Any] = dict(socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout,
                                  retry=Retry(NoBackoff(), 0), health_check_interval=0)
        if self.username:
            kw["username"] = self.username
        if self.password:
            kw["password"] = self.password
        client = redis.Redis.from_url(self.url, **kw)
        client.ping()
        return client

    def _set_connected(self, ok: bool, error: str | None = None) -> None:
        if ok and not self.connected:
            log.info("redis: connected")
        if not ok:
            msg = self.scrub(error or "unknown error")
            if self.connected or msg != self.last_error:
                log.warning("redis: unavailable (%s); buffering records (%d buffered)", msg, self.buffered)
            self.last_error = msg
            self._client = None
            self._streams_registered = False
        self.connected = ok
        if self.metrics is not None:
            self.metrics.up.set(1 if ok else 0)

    def _run(self) -> None:
        backoff = Backoff(0.2, 2.0, 2.0, 0.2)
        while True:
            stopping = self._stop.is_set()
            if stopping and (time.monotonic() > self._flush_deadline or not self._has_work()):
                return
            if not self._has_work():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self._client is None:
                try:
                    self._client = self._connect()
                    self._set_connected(True)
                    backoff.reset()
                except Exception as e:
                    self._set_connected(False, connection_error_text(e, password_given(self.url, self.password)))
                    delay = backoff.next_delay()
                    if stopping:
                        delay = min(delay, max(0.0, self._flush_deadline - time.monotonic()))
                    self._stop.wait(delay) if not stopping else time.sleep(delay)
                    continue
            try:
                self._write_once()
            except Exception as e:
                self._set_connected(False, _err(e))

    def _has_work(self) -> bool:
        with self._lock:
            return bool(self._records or self._inflight or self._events or self._states
                        or (self._streams and not self._streams_registered))

    def _write_once(self) -> None:
        import redis
        with self._lock:
            n = min(len(self._records), self.batch_size)
            batch = [self._records.popleft() for _ in range(n)]
            self._inflight = batch
            events = [self._events.popleft() for _ in range(min(len(self._events), self.batch_size))]
            states = dict(self._states)
            self._states.clear()
            streams = set(self._streams) if not self._streams_registered else set()
        pipe = self._client.pipeline(transaction=False)
        if streams:
            pipe.sadd(self.streams_key, *sorted(streams))
        for rec in batch:
            pipe.xadd(self.records_key(rec.stream), rec.fields, id=rec.entry_id,
                      maxlen=self.maxlen, approximate=True)
        for ev in events:
            pipe.xadd(self.events_key, ev.fields, maxlen=self.events_maxlen, approximate=True)
        for stream, (fields, ttl) in states.items():
            pipe.hset(self.state_key(stream), mapping=fields)
            pipe.expire(self.state_key(stream), max(1, int(math.ceil(ttl))))
        try:
            results = pipe.execute(raise_on_error=False)
        except Exception:
            with self._lock:  # not acknowledged: back to the front of the buffers, in order
                for rec in reversed(batch):
                    rec.attempts += 1
                    self._records.appendleft(rec)
                self._inflight = []
                for ev in reversed(events):
                    ev.attempts += 1
                    self._events.appendleft(ev)
                for stream, st in states.items():
                    if stream not in self._states:
                        self._states[stream] = st
                self._trim_locked()
            raise
        now = time.time()
        rejected: Counter = Counter()
        first_error: Exception | None = None
        i = 0
        if streams:
            i += 1
            with self._lock:  # (rejected: registered again after the next reconnect, not in a busy loop)
                self._streams_registered = True
            if isinstance(results[0], Exception):
                rejected["state"] += 1
                first_error = results[0]
        written = 0
        retry_auto: list[_Record] = []
        for rec in batch:
            res = results[i]
            i += 1
            if isinstance(res, redis.ResponseError) and "equal or smaller" in str(res):
                if rec.attempts:
                    # a retry of a write that did reach Redis before the connection broke
                    self.stats.duplicates += 1
                    written += 1
                    self._latency(rec, now)
                else:
                    # the stream already has newer ids (another writer, a clock step): Redis picks
                    rec.entry_id = "*"
                    retry_auto.append(rec)
            elif isinstance(res, Exception):
                rejected["record"] += 1
                first_error = first_error or res
                with self._lock:
                    self._lost(1)
            else:
                written += 1
                self._latency(rec, now)
        ev_results = results[i:i + len(events)]
        ev_failed = sum(1 for r in ev_results if isinstance(r, Exception))
        i += len(events)
        state_results = results[i:]
        # a state write is two commands (HSET, EXPIRE): rejected if either was
        state_failed = sum(1 for k in range(0, len(state_results), 2)
                           if any(isinstance(r, Exception) for r in state_results[k:k + 2]))
        rejected.update({"event": ev_failed, "state": state_failed})
        first_error = first_error or next((r for r in list(ev_results) + list(state_results)
                                           if isinstance(r, Exception)), None)
        with self._lock:
            for rec in reversed(retry_auto):
                self._records.appendleft(rec)
            self._inflight = []
            self.stats.written += written
            self.stats.events_written += len(events) - ev_failed
            self.stats.events_lost += ev_failed
            if self.metrics is not None:
                self.metrics.written.inc(written)
            self._trim_locked()
        self._count_rejections(+rejected, first_error)

    def _count_rejections(self, rejected: Counter, error: Exception | None) -> None:
        if self.metrics is not None:
            for kind, n in rejected.items():
                self.metrics.rejected.labels(kind).inc(n)
        if rejected:
            self.write_error = self.scrub(_err(error)) if error is not None else "rejected"
            self._rejections.rejected(rejected, self.write_error)
        else:
            self._rejections.accepted()
            self.write_error = None
        if self.metrics is not None:
            self.metrics.write_errors.set(1 if rejected else 0)

    def _latency(self, rec: _Record, now: float) -> None:
        lat = max(0.0, now - rec.ts)
        self.stats.latencies.append(lat)
        if self.metrics is not None:
            self.metrics.decode_to_redis.observe(lat)


def _err(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"
