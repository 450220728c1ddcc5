"""Everything the monitor knows about one stream, in one place.

The stream's supervisor thread (``monitor.source.StreamWorker``) writes how the source is doing
(state, error, decoded frames, fps, reconnects); the stream tracker (``monitor.tracking``) writes
what the scorer and the detectors found. The console, the live view, health and the sinks read it.
Fields are replaced whole (no read-modify-write across threads), so readers need no lock.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .smoothing import ScoreSmoother
from .stream_config import StreamConfig

TERMINAL_STATES = {"ended", "failed"}
HISTORY_LEN = 300              # recent scores kept per stream for the live view


@dataclass
class StreamState:
    cfg: StreamConfig
    # -- the source (supervisor thread)
    state: str = "starting"               # starting, connecting, up, stale, error, failed, ended, stopped
    error: str | None = None              # the last error, scrubbed; None while up
    info: dict = field(default_factory=dict)  # what the worker found when it opened the source (codec, decoder...)
    decoded: int = 0                      # frames decoded by the current worker process
    fps: float = 0.0
    reconnects: int = 0
    # -- scores and detectors (stream tracker)
    scored: int = 0
    dropped: int = 0
    score: float | None = None
    smoothed: float | None = None
    worst: float | None = None
    last_decoded_wall: float | None = None
    started: float = field(default_factory=time.time)
    timing: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, float] = field(default_factory=dict)
    down_open: bool = False               # a stream_down event was sent and not resolved
    logged_error: str | None = None
    logged_at: float = 0.0
    last_image: Any = None                # latest sampled frame (for alert snapshots)
    last_size: tuple[int, int] | None = None
    # (decode time, score, worst cell, smoothed score) of the last HISTORY_LEN scored frames, for the live view
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    last_scored: tuple[int, Any] | None = None  # (scored count, ScoredFrame), replaced as a whole
    smoother: ScoreSmoother = field(init=False)

    def __post_init__(self) -> None:
        self.smoother = ScoreSmoother(self.cfg.score_smoothing)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES
