"""The smoothed score (monitor.smoothing): an EMA over time, reset after a gap."""
from __future__ import annotations

import math

import pytest

from monitor.smoothing import RESET_TAUS, ScoreSmoother


def test_one_odd_sample_moves_the_smoothed_score_little():
    s = ScoreSmoother(4.0)
    for i in range(20):
        s.update(i * 0.5, 60.0)
    assert s.value == pytest.approx(60.0)
    after = s.update(10.0, 20.0)  # one sample of a very different shot, 0.5 s later
    assert after == pytest.approx(60.0 - 40.0 * (1 - math.exp(-0.5 / 4.0)))
    assert after > 55.0


def test_a_lasting_change_is_followed_at_the_time_constant_whatever_the_rate():
    for rate in (0.5, 2.0, 10.0):
        s = ScoreSmoother(4.0)
        s.update(0.0, 80.0)
        t, v = 0.0, 80.0
        while t < 4.0 - 1e-9:
            t += 1.0 / rate
            v = s.update(t, 30.0)
        # after one time constant, 63 % of the way from 80 to 30
        assert v == pytest.approx(80.0 - 50.0 * (1 - math.exp(-1.0)), abs=0.01), rate


def test_gaps_and_backward_time_start_afresh():
    s = ScoreSmoother(2.0)
    s.update(0.0, 90.0)
    assert s.update(RESET_TAUS * 2.0 + 1.0, 10.0) == 10.0  # a stream that was down
    assert s.update(1.0, 50.0) == 50.0                      # a file that looped


def test_zero_tau_is_the_raw_score():
    s = ScoreSmoother(0.0)
    assert [s.update(t, v) for t, v in ((0, 10.0), (0.5, 70.0))] == [10.0, 70.0]
    with pytest.raises(ValueError):
        ScoreSmoother(-1)
