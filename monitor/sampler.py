"""Small timing helpers of the stream workers: time-based sampling, real-time pacing, backoff."""
from __future__ import annotations

import random
import time


class Sampler:
    """Picks frames ``interval`` seconds apart on a clock (stream pts or wall time).

    The first frame is always taken. A clock that goes backwards or leaps forward by more than
    ``max_jump`` seconds (a reconnect, a loop, a broken timestamp) restarts the schedule at the
    new time instead of taking a burst of frames or none for a long while.
    """

    def __init__(self, interval: float, max_jump: float = 10.0):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = float(interval)
        self.max_jump = max(float(max_jump), 2 * self.interval)
        self._next: float | None = None
        self._last: float | None = None
        self.slack = 0.0  # take a frame up to this early (key frames only: the GOP is not exact)

    def reset(self) -> None:
        self._next = self._last = None

    def take(self, t: float) -> bool:
        last, self._last = self._last, t
        if self._next is None or (last is not None and (t < last or t - last > self.max_jump)):
            self._next = t + self.interval
            return True
        if t + self.slack + 1e-6 >= self._next:
            self._next += self.interval
            if self._next <= t:  # fell behind by more than one interval: re-anchor
                self._next = t + self.interval
            return True
        return False


class Pacer:
    """Holds a file's decoding back to real time: frame at stream time ``t`` is released at
    ``start_wall + (t - start_t)``. Resynchronises when the clock jumps (loops, broken pts)."""

    def __init__(self, max_lead: float = 2.0, clock=time.monotonic, sleep=time.sleep):
        self.max_lead = max_lead
        self._clock, self._sleep = clock, sleep
        self._origin: tuple[float, float] | None = None  # (stream t, wall)
        self._last_t: float | None = None
        self.lag = 0.0  # how late the last frame was (0 once re-anchored: a stall is forgiven)

    def reset(self) -> None:
        self._origin = self._last_t = None

    def delay(self, t: float) -> float:
        """Seconds to wait before frame time ``t`` is due (0 when due); re-anchors on jumps."""
        now = self._clock()
        if self._origin is None or (self._last_t is not None and (t < self._last_t or t - self._last_t > self.max_lead)):
            self._origin = (t, now)
        self._last_t = t
        due = self._origin[1] + (t - self._origin[0])
        lag = now - due
        if lag > self.max_lead:  # far behind (slow decode, suspended): do not race to catch up
            self._origin = (t, now)
            self.lag = 0.0
            return 0.0
        self.lag = max(0.0, lag)
        return max(0.0, -lag)


class Lag:
    """How far behind real time a stream's packets are handled (seconds).

    Wall time since an anchor minus media time since it. The anchor moves to any packet handled
    earlier than it predicts (network jitter), and ``drift`` (a fraction of the elapsed time) is
    forgiven, so a camera clock a little slower than the wall's does not read as lag: only a
    backlog that grows faster than that does. A jump of the media clock restarts it."""

    def __init__(self, drift: float = 1e-3, max_jump: float = 10.0, clock=time.monotonic):
        self.drift, self.max_jump, self._clock = drift, max_jump, clock
        self._anchor: tuple[float, float] | None = None  # (media t, wall)
        self._last_t: float | None = None

    def update(self, t: float) -> float:
        now = self._clock()
        if self._anchor is None or self._last_t is None or t < self._last_t or t - self._last_t > self.max_jump:
            self._anchor = (t, now)
        self._last_t = t
        elapsed = now - self._anchor[1]
        lag = elapsed - (t - self._anchor[0]) - self.drift * elapsed
        if lag < 0:
            self._anchor, lag = (t, now), 0.0
        return lag


class Backoff:
    """Exponential backoff with jitter: initial_delay, initial_delay*m, ... capped at ``max_delay``
    (the fields of a stream's ``reconnect`` settings, monitor.stream_config.Reconnect)."""

    def __init__(self, initial_delay: float, max_delay: float, multiplier: float, jitter: float,
                 rng: random.Random | None = None):
        self.initial_delay, self.max_delay, self.multiplier, self.jitter = initial_delay, max_delay, multiplier, jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.max_delay, self.initial_delay * (self.multiplier ** self.attempt))
        self.attempt += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, self.max_delay * (1.0 + self.jitter)))
