"""How a stream worker keeps to real time: pacing a file, measuring how far behind a stream's
packets are handled, and shedding load while behind, so a starved decoder's backlog does not
grow into seconds of latency (samples it skips are counted as dropped, ``decoder_behind``).

- Key frames only: a key frame that the worker is more than ``SHED_LAG`` late for is skipped
  (the next one decodes on its own).
- All frames (:class:`CatchUp`): more than ``SHED_LAG`` behind, the worker stops decoding and
  skips packets up to a key frame that it reaches no more than ``RESUME_LAG`` behind, and
  decodes all frames again from there (nothing after a key frame is broken).

Only a stall of more than ``SHED_MAX_LAG`` (a suspended process, an I/O hang) is forgiven: the
pacer then starts again at real time where it is.
"""
from __future__ import annotations

from .sampler import Lag, Pacer

SHED_LAG = 1.0
RESUME_LAG = 0.5
SHED_MAX_LAG = 30.0   # further behind than this is a stall (suspended, I/O), not a backlog


class CatchUp:
    """The all-frames decision: skip packets while behind, resume at a key frame caught up."""

    def __init__(self) -> None:
        self.skipping = False

    def decode(self, lag: float, is_key: bool) -> bool:
        """Whether to decode this packet, ``lag`` seconds behind real time."""
        if self.skipping:
            self.skipping = not (is_key and lag <= RESUME_LAG)
        elif lag > SHED_LAG:
            self.skipping = True
        return not self.skipping


class RealTime:
    """One worker's clock keeping. ``paced``: a file (or ``pace: true``) released at real time;
    ``live``: a network source (its sender paces it). An unpaced file has no real time to keep."""

    def __init__(self, paced: bool, live: bool) -> None:
        self.paced = paced
        self.pacer = Pacer(max_lead=SHED_MAX_LAG)
        self.lag = Lag()
        self.catch_up = CatchUp() if paced or live else None
        self.shed = 0  # samples skipped because the worker was behind real time

    @property
    def keeps_time(self) -> bool:
        """False for an unpaced file: nothing to pace, to lag behind or to shed."""
        return self.catch_up is not None

    def reset(self) -> None:
        """A reconnect: timestamps start anywhere."""
        self.pacer.reset()
        if self.catch_up is not None:
            self.catch_up.skipping = False

    def behind(self, t: float) -> float:
        """Seconds behind real time at media time ``t``."""
        return self.pacer.lag if self.paced else self.lag.update(t)

    def skip_key(self, t: float) -> bool:
        """Key frames only: True (and counted) for a key frame to skip."""
        if self.behind(t) > SHED_LAG:
            self.shed += 1
            return True
        return False

    def keep_all(self, t: float, is_key: bool) -> tuple[bool, bool]:
        """All frames: (decode this packet, it has just fallen behind)."""
        was = self.catch_up.skipping
        decode = self.catch_up.decode(self.behind(t), is_key)
        return decode, not decode and not was
