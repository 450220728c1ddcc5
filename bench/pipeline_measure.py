"""What bench/pipeline.py measures: a pipeline run between two marks, decode alone, the engine alone.

A :class:`PipelineRun` is the real service (a worker process per looped file stream, the
batching scorer, a private redis-server); its :meth:`~PipelineRun.mark` snapshots counters
and :meth:`~PipelineRun.window` turns two marks into rates, latencies and CPU use, so the load,
capacity and soak modes share one measurement.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import percentile
from monitor.config import config_from_dict
from monitor.service import Monitor
from monitor.source import StreamListener, StreamWorker
from monitor.stream_config import StreamConfig
from procstats import cpu_seconds, pss_mb, rss_mb


@dataclass
class Setup:
    """What every stream of a run shares."""

    clips: list[tuple[str, Path]]
    rate: float
    decode: str
    model: str
    backend: str
    max_batch: int
    max_wait_ms: float
    detectors: bool
    nice: int | None = None  # the decoder workers' CPU priority; None: the product's default

    def defaults(self) -> dict:
        """The streams' settings (a config's ``defaults``)."""
        return {"sample_rate": self.rate, "model": self.model, "decode": self.decode,
                "detectors": {"enabled": self.detectors}, **({"nice": self.nice} if self.nice is not None else {})}

    def streams(self, n: int, prefix: str = "s") -> list[dict]:
        """``n`` looped file streams cycling through the clips."""
        return [{"name": f"{prefix}{i}-{label}", "url": str(path), "loop": True}
                for i, (label, path) in zip(range(n), itertools.cycle(self.clips))]


@dataclass
class Mark:
    t: float
    scored: int
    dropped: int
    written: int
    batches: int
    latencies: list[float]
    last: dict[str, tuple[float, float]]   # stream -> (media time, decode wall time) of its last scored frame
    cpu: dict[int, float] = field(default_factory=dict)  # worker pid -> CPU seconds
    monitor_cpu: float | None = None
    redis_cpu: float | None = None


def _cpu_delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


class PipelineRun:
    """The monitor over ``n`` streams, started on enter (after every stream's first scored frame
    and ``warmup`` seconds) and stopped on exit."""

    def __init__(self, engine, setup: Setup, n: int, warmup: float, stagger: float = 0.0):
        self.n, self.warmup, self.stagger = n, warmup, stagger
        cfg = config_from_dict({
            "defaults": setup.defaults(), "streams": setup.streams(n),
            "engine": {"backend": setup.backend, "max_batch": setup.max_batch, "max_wait_ms": setup.max_wait_ms},
            "metrics": {"enabled": False}, "console": False,
            "redis": {"maxlen": 100_000},
        })
        self.mon = Monitor(cfg, engines={setup.model: engine}, announce=lambda text: None)

    def __enter__(self) -> PipelineRun:
        # cameras are not in step: spread the streams' starts (so their key frames) over
        # ``stagger`` seconds; started together, every stream's key frame is decoded at once
        start, order = StreamWorker.start, itertools.count()
        if self.stagger > 0:
            StreamWorker.start = lambda w: threading.Timer(next(order) * self.stagger / self.n, start, (w,)).start()
        try:
            self.mon.start()
        finally:
            StreamWorker.start = start
        time.sleep(self.stagger)
        sink = next(s for s in self.mon.sinks if s.name == "redis")
        self.writer = sink.writer
        self.redis_pid = sink.embedded.proc.pid if sink.embedded and sink.embedded.proc else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(st.scored for st in self.mon.streams.values()):
            time.sleep(0.2)
        time.sleep(max(0.0, self.warmup))
        return self

    def __exit__(self, *exc) -> None:
        self.mon.stop()

    def _pids(self) -> dict[str, int]:
        return {name: pid for name, w in self.mon.workers.items() if (pid := w.pid) is not None}

    def mark(self) -> Mark:
        streams = self.mon.streams.values()
        last_scored = [st.last_scored[1].frame for st in streams if st.last_scored]
        return Mark(
            t=time.monotonic(), scored=sum(st.scored for st in streams),
            dropped=sum(st.dropped for st in streams), written=self.writer.stats.written,
            batches=self.mon.batcher.batches, latencies=list(self.writer.stats.latencies),
            last={f.stream: (f.pts, f.ts) for f in last_scored},
            cpu={pid: c for pid in self._pids().values() if (c := cpu_seconds(pid)) is not None},
            monitor_cpu=cpu_seconds(os.getpid()),
            redis_cpu=cpu_seconds(self.redis_pid) if self.redis_pid else None)

    def window(self, a: Mark, b: Mark) -> dict:
        """Rates and latencies between two marks."""
        dt = b.t - a.t
        scored, dropped, written = b.scored - a.scored, b.dropped - a.dropped, b.written - a.written
        # the latency deque is bounded: the records of this window are its last ``written`` ones
        lats = b.latencies[len(b.latencies) - min(written, len(b.latencies)):]
        batches = b.batches - a.batches
        # media seconds per wall second between a stream's last scored frames at the two marks
        # (exact, unlike counting frames in the window): < 1 when decoding falls behind real time
        # (the pacer then lets the stream lag, so its frames are neither sampled nor dropped)
        speed = [(b.last[s][0] - a.last[s][0]) / (b.last[s][1] - a.last[s][1])
                 for s in b.last if s in a.last and b.last[s][1] > a.last[s][1]]
        worker_cpu = sum(b.cpu[p] - a.cpu[p] for p in b.cpu if p in a.cpu)  # a respawned worker: left out
        monitor_cpu, redis_cpu = _cpu_delta(a.monitor_cpu, b.monitor_cpu), _cpu_delta(a.redis_cpu, b.redis_cpu)
        return {
            "streams": self.n, "seconds": round(dt, 1),
            "scored_per_s": round(scored / dt, 2), "dropped": dropped, "dropped_per_s": round(dropped / dt, 2),
            "sampled_per_s": round((scored + dropped) / dt, 2), "written_per_s": round(written / dt, 2),
            "mean_batch": round(scored / batches, 2) if batches else None,
            "latency_p50_s": round(percentile(lats, 50), 3), "latency_p99_s": round(percentile(lats, 99), 3),
            "records": len(lats),
            "realtime": round(sum(speed) / len(speed), 3) if speed else None,
            "realtime_min": round(min(speed), 3) if speed else None,
            "streams_scored": len(speed),
            "workers_cpu_cores": round(worker_cpu / dt, 2),
            "monitor_cpu_cores": None if monitor_cpu is None else round(monitor_cpu / dt, 2),
            "redis_cpu_cores": None if redis_cpu is None else round(redis_cpu / dt, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "decoding": self.decoding(),
        }

    def decoding(self) -> dict[str, int]:
        """How many streams decode key frames only or all frames now (what ``auto`` chose)."""
        modes = Counter((st.info.get("decode") or {}).get("mode", "?") for st in self.mon.streams.values())
        return dict(sorted(modes.items()))

    def memory(self) -> dict:
        """RSS and PSS of the worker processes, the monitor process and its redis-server (MB)."""
        per = {name: (rss_mb(pid), pss_mb(pid)) for name, pid in self._pids().items()}
        rss = [r for r, _ in per.values() if r is not None]
        pss = [p for _, p in per.values() if p is not None]
        me = os.getpid()
        return {
            "workers": len(per),
            "workers_rss_mb": round(sum(rss), 1), "workers_pss_mb": round(sum(pss), 1),
            "worker_rss_mean_mb": round(sum(rss) / len(rss), 1) if rss else None,
            "worker_rss_max_mb": round(max(rss), 1) if rss else None,
            "worker_pss_mean_mb": round(sum(pss) / len(pss), 1) if pss else None,
            "worker_pss_max_mb": round(max(pss), 1) if pss else None,
            "monitor_rss_mb": _round(rss_mb(me)), "monitor_pss_mb": _round(pss_mb(me)),
            "redis_rss_mb": _round(rss_mb(self.redis_pid)) if self.redis_pid else None,
            "per_worker_mb": {name: [_round(r), _round(p)] for name, (r, p) in per.items()},
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def engine_only(engine, frames, batch: int, seconds: float) -> float:
    """Frames/s of engine.score on ready model inputs at ``batch``, from as many threads as the
    engine scores batches at once (``engine.parallel``, as the monitor's scorer does)."""
    import threading

    engine.score(frames[:batch])  # warm-up
    counts = [0] * max(1, getattr(engine, "parallel", 1))
    t0 = time.perf_counter()

    def loop(i: int) -> None:
        while time.perf_counter() - t0 < seconds:
            engine.score([frames[(counts[i] + k) % len(frames)] for k in range(batch)])
            counts[i] += batch

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


class _LastFrame(StreamListener):
    """Keeps each stream's last sampled frame: (arrival, media time)."""

    def __init__(self):
        self.last: dict[str, tuple[float, float]] = {}

    def on_frame(self, msg) -> None:
        self.last[msg.stream] = (msg.received, msg.pts)


def decode_only(setup: Setup, view, workers: int, seconds: float) -> dict:
    """Decode capacity in real-time streams: ``workers`` unpaced worker processes (same clips,
    decode mode, sample rate, detectors and model input as the pipeline), frames not scored.
    Each worker's media seconds per wall second, summed; and per CPU second, the cost of one
    stream whatever else runs on the machine."""
    listener = _LastFrame()
    procs = [StreamWorker(StreamConfig.model_validate({**setup.defaults(), **s, "pace": False}), view, listener)
             for s in setup.streams(workers, prefix="d")]
    for w in procs:
        w.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(listener.last) < workers:
            time.sleep(0.1)
        time.sleep(1.0)  # past the first frames (process start, open)
        pids = [w.pid for w in procs]
        a, cpu_a, t_a = dict(listener.last), [cpu_seconds(p) if p else None for p in pids], time.monotonic()
        time.sleep(seconds)
        b, cpu_b, t_b = dict(listener.last), [cpu_seconds(p) if p else None for p in pids], time.monotonic()
    finally:
        for w in procs:
            w.stop()
        for w in procs:
            w.join(timeout=2.0)
    speeds = {s: (b[s][1] - a[s][1]) / (b[s][0] - a[s][0]) for s in b if s in a and b[s][0] > a[s][0]}
    media = sum(b[s][1] - a[s][1] for s in speeds)
    cpu = sum(y - x for x, y in zip(cpu_a, cpu_b) if x is not None and y is not None)
    return {"workers": workers, "seconds": round(t_b - t_a, 1), "streams": round(sum(speeds.values()), 2),
            "per_worker_realtime": {s: round(v, 2) for s, v in speeds.items()},
            "cpu_cores": round(cpu / (t_b - t_a), 2),
            "streams_per_core": round(media / cpu, 2) if cpu else None}
