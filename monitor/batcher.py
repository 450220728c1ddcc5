"""Batching scorer: the latest frame of every stream, batched through one engine per model.

Each stream has one slot. A new frame replaces an unscored one (the scorer is behind: only the
latest picture matters for a live monitor) and the replaced frame is counted as dropped. A
scoring thread takes the streams' pending frames for one model, oldest first, up to
``max_batch``; when fewer are pending it waits up to ``max_wait`` (from the oldest frame's
arrival) for more, then scores the batch and hands every stream its own score and region map.

An engine whose backend scores several batches at once (``parallel``: the CPU backend runs one
per core, small batches side by side being faster there than one large batch) gets that many
scoring threads. A stream has at most one frame in flight, so its results stay in order, and
the results are handed on one batch at a time, so the receivers need no locks of their own.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.types import RegionMap

from .source import FrameMessage

log = logging.getLogger(__name__)


@dataclass
class ScoredFrame:
    frame: FrameMessage
    model: str
    score: float
    region_map: RegionMap      # over the original frame size
    batch_size: int
    inference_seconds: float   # engine time of the whole batch
    scored_at: float           # wall clock


class Batcher:
    """The scoring threads over all streams (one per batch an engine scores at once).

    ``engines``: model name -> object with ``score(list[ndarray]) -> list[Prediction]`` and
    optionally ``max_batch`` and ``parallel``. ``on_result(ScoredFrame)``,
    ``on_drop(stream, reason, count)``, ``on_batch(model, size, seconds)`` are called from the
    scoring threads, one batch at a time.
    """

    def __init__(self, engines: dict[str, Any], stream_models: dict[str, str], max_batch: int | None = None,
                 max_wait: float = 0.05, on_result: Callable[[ScoredFrame], None] | None = None,
                 on_drop: Callable[[str, str, int], None] | None = None,
                 on_batch: Callable[[str, int, float], None] | None = None):
        self.engines = engines
        self.stream_models = dict(stream_models)
        # ``max_batch`` None: each engine's own (its backend's choice)
        self.max_batch = {m: max(1, min(x for x in (max_batch, getattr(e, "max_batch", None), 256) if x))
                          for m, e in engines.items()}
        self.max_wait = float(max_wait)
        self.on_result = on_result or (lambda r: None)
        self.on_drop = on_drop or (lambda s, r, n: None)
        self.on_batch = on_batch or (lambda m, n, s: None)
        self.parallel = {m: max(1, int(getattr(e, "parallel", 1) or 1)) for m, e in engines.items()}
        self._slots: dict[str, FrameMessage] = {}
        self._cond = threading.Condition()
        self._deliver = threading.Lock()  # one batch's results at a time
        self._stop = False
        self._in_flight: dict[str, int] = {m: 0 for m in engines}  # batches being scored, per model
        self._scoring: set[str] = set()  # streams with a frame in those batches
        self._threads = [threading.Thread(target=self._run, name=f"scorer-{i}", daemon=True)
                         for i in range(max(self.parallel.values(), default=1))]
        self.batches = 0
        self.scored = 0

    # -- producer side ------------------------------------------------------------------------
    def submit(self, frame: FrameMessage) -> None:
        if frame.stream not in self.stream_models:
            raise KeyError(f"unknown stream {frame.stream!r}")
        with self._cond:
            if self._stop:
                return
            replaced = self._slots.get(frame.stream)
            self._slots[frame.stream] = frame
            self._cond.notify()
        if replaced is not None:
            self.on_drop(frame.stream, "scorer_behind", 1)

    @property
    def alive(self) -> bool:
        """The scoring threads are running (for /healthz)."""
        return all(t.is_alive() for t in self._threads)

    def pending(self) -> int:
        with self._cond:
            return len(self._slots)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 3.0) -> int:
        """Stop taking frames; wait for the batch in flight. Returns the frames left unscored."""
        with self._cond:
            self._stop = True
            left = len(self._slots)
            for stream in list(self._slots):
                self.on_drop(stream, "shutdown", 1)
            self._slots.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return left

    # -- scoring thread -----------------------------------------------------------------------
    def _ready(self) -> list[FrameMessage]:
        """Pending frames a scoring thread may take: their stream has none in flight and their
        model a batch to spare."""
        return [f for f in self._slots.values() if f.stream not in self._scoring
                and self._in_flight[self.stream_models[f.stream]] < self.parallel[self.stream_models[f.stream]]]

    def _take_batch(self) -> tuple[str, list[FrameMessage]] | None:
        with self._cond:
            while not self._stop and not self._ready():
                self._cond.wait(0.5)
            if self._stop:
                return None
            # the model whose oldest frame waited longest goes first
            oldest = min(self._ready(), key=lambda f: f.received)
            model = self.stream_models[oldest.stream]
            limit = self.max_batch[model]
            deadline = oldest.received + self.max_wait
            while not self._stop:
                mine = [f for f in self._ready() if self.stream_models[f.stream] == model]
                left = deadline - time.monotonic()
                if len(mine) >= limit or left <= 0:
                    break
                self._cond.wait(left)
            if self._stop:
                return None
            mine = sorted((f for f in self._ready() if self.stream_models[f.stream] == model),
                          key=lambda f: f.received)[:limit]
            if not mine:  # another thread took them while this one waited
                return model, []
            for f in mine:
                del self._slots[f.stream]
                self._scoring.add(f.stream)
            self._in_flight[model] += 1
            return model, mine

    def _done(self, model: str, frames: list[FrameMessage]) -> None:
        with self._cond:
            self._in_flight[model] -= 1
            self._scoring.difference_update(f.stream for f in frames)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            got = self._take_batch()
            if got is None:
                return
            model, frames = got
            if frames:
                try:
                    self._score(model, frames)
                finally:
                    self._done(model, frames)

    def _score(self, model: str, frames: list[FrameMessage]) -> None:
        engine = self.engines[model]
        t0 = time.perf_counter()
        try:
            preds = engine.score([f.model_frame for f in frames], frame_sizes=[(f.height, f.width) for f in frames])
        except Exception as e:
            log.error("scoring a batch of %d for model %s failed: %s", len(frames), model, e)
            with self._deliver:
                for f in frames:
                    self.on_drop(f.stream, "score_error", 1)
            return
        dt = time.perf_counter() - t0
        with self._deliver:
            self.batches += 1
            try:
                self.on_batch(model, len(frames), dt)
            except Exception:
                log.exception("batch callback failed")
            now = time.time()
            for f, p in zip(frames, preds):
                self.scored += 1
                try:
                    self.on_result(ScoredFrame(f, model, float(p.score), p.region_map, len(frames), dt, now))
                except Exception:
                    log.exception("stream %s: result handler failed", f.stream)
