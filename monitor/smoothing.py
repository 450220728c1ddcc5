"""The smoothed per-stream score: what a person reads, beside the raw per-frame score.

An exponential moving average over time (not over samples, so it means the same at any
sample rate): each new sample moves the average by ``1 - exp(-dt / tau)`` of the gap. One
sample of a different shot moves it little; a change that lasts moves it most of the way
within ``2 tau``. A gap longer than ``RESET_TAUS * tau`` (a stream that was down, a file
that looped) starts afresh from the next sample.
"""
from __future__ import annotations

import math

RESET_TAUS = 10.0


class ScoreSmoother:
    def __init__(self, tau: float):
        if tau < 0:
            raise ValueError("tau must be >= 0")
        self.tau = float(tau)
        self.value: float | None = None
        self._t: float | None = None

    def update(self, t: float, score: float) -> float:
        """Add the score of a sample taken at time ``t`` (seconds); returns the smoothed score."""
        if self.value is None or self.tau == 0 or self._t is None \
                or not 0 <= t - self._t <= RESET_TAUS * self.tau:
            self.value = float(score)
        else:
            self.value += (1.0 - math.exp(-(t - self._t) / self.tau)) * (float(score) - self.value)
        self._t = t
        return self.value
