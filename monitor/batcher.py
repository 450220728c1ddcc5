"""Batching scorer: the latest frame of every stream, batched through one engine per model.

Each stream has one slot. A new frame replaces an unscored one (the scorer is behind: only the
latest picture matters for a live monitor) and the replaced frame is counted as dropped. The
scoring thread takes the streams' pending frames for one model, oldest first, up to
``max_batch``; when fewer are pending it waits up to ``max_wait`` (from the oldest frame's
arrival) for more, then scores the batch and hands every stream its own score and region map.
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
    """One scoring thread over all streams.

    ``engines``: model name -> object with ``score(list[ndarray]) -> list[Prediction]``.
    ``on_result(ScoredFrame)``, ``on_drop(stream, reason, count)``,
    ``on_batch(model, size, seconds)`` are called from the scoring thread.
    """

    def __init__(self, engines: dict[str, Any], stream_models: dict[str, str], max_batch: int = 8,
                 max_wait: float = 0.05, on_result: Callable[[ScoredFrame], None] | None = None,
                 on_drop: Callable[[str, str, int], None] | None = None,
                 on_batch: Callable[[str, int, float], None] | None = None):
        self.engines = engines
        self.stream_models = dict(stream_models)
        self.max_batch = {m: max(1, min(int(max_batch), int(getattr(e, "max_batch", max_batch) or max_batch)))
                          for m, e in engines.items()}
        self.max_wait = float(max_wait)
        self.on_result = on_result or (lambda r: None)
        self.on_drop = on_drop or (lambda s, r, n: None)
        self.on_batch = on_batch or (lambda m, n, s: None)
        self._slots: dict[str, FrameMessage] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
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
        """The scoring thread is running (for /healthz)."""
        return self._thread.is_alive()

    def pending(self) -> int:
        with self._cond:
            return len(self._slots)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> int:
        """Stop taking frames; wait for the batch in flight. Returns the frames left unscored."""
        with self._cond:
            self._stop = True
            left = len(self._slots)
            for stream in list(self._slots):
                self.on_drop(stream, "shutdown", 1)
            self._slots.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        return left

    # -- scoring thread -----------------------------------------------------------------------
    def _take_batch(self) -> tuple[str, list[FrameMessage]] | None:
        with self._cond:
            while not self._stop and not self._slots:
                self._cond.wait(0.5)
            if self._stop:
                return None
            # the model whose oldest frame waited longest goes first
            oldest = min(self._slots.values(), key=lambda f: f.received)
            model = self.stream_models[oldest.stream]
            limit = self.max_batch[model]
            deadline = oldest.received + self.max_wait
            while not self._stop:
                mine = [f for f in self._slots.values() if self.stream_models[f.stream] == model]
                left = deadline - time.monotonic()
                if len(mine) >= limit or left <= 0:
                    break
                self._cond.wait(left)
            if self._stop:
                return None
            mine = sorted((f for f in self._slots.values() if self.stream_models[f.stream] == model),
                          key=lambda f: f.received)[:limit]
            for f in mine:
                del self._slots[f.stream]
            return model, mine

    def _run(self) -> None:
        while True:
            got = self._take_batch()
            if got is None:
                return
            model, frames = got
            engine = self.engines[model]
            t0 = time.perf_counter()
            try:
                preds = engine.score([f.model_frame for f in frames], frame_sizes=[(f.height, f.width) for f in frames])
            except Exception as e:
                log.error("scoring a batch of %d for model %s failed: %s", len(frames), model, e)
                for f in frames:
                    self.on_drop(f.stream, "score_error", 1)
                continue
            dt = time.perf_counter() - t0
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
