"""The per-stream ``decode`` setting (monitor.decode_mode): all frames, key frames only, or auto.

The decision itself is tested on timestamps; the worker is tested on real H.264 files with a
fixed GOP (libx264, ``g``/``keyint_min``, no scene cuts), decoded by the real worker process.
"""
from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import wait_for
from engines.views import InputView
from monitor.config import config_from_dict
from monitor.decode_mode import KEYFRAME_LIMITS, DecodeMode
from monitor.real_time import CatchUp
from monitor.sampler import Lag
from monitor.source import StreamListener, StreamWorker
from monitor.stream_config import StreamConfig

FPS = 25


def _packets(mode: DecodeMode, seconds: float, gop: float, start: float = 0.0) -> list[str]:
    """Feed ``seconds`` of 25 fps packets with a key frame every ``gop`` s; the changes said."""
    said = []
    for i in range(int(round(seconds * FPS))):
        t = start + i / FPS
        is_key = abs((t - start) / gop - round((t - start) / gop)) < 1e-6
        change = mode.on_packet(t, is_key)
        if change:
            said.append(change)
    return said


def test_keyframes_mode_stays_on_key_frames_when_the_gop_fits():
    m = DecodeMode("keyframes", sample_interval=2.0)
    assert m.keyframes_only  # from the first packet: no measuring period
    said = _packets(m, 10, gop=2.0)
    assert m.keyframes_only and m.key_interval == pytest.approx(2.0)
    assert said == ["decode keyframes: key frames only: key-frame interval 2.00 s <= sample interval 2 s"]
    assert m.info()["unseen"] == list(KEYFRAME_LIMITS)


def test_auto_decodes_all_frames_until_two_key_frame_intervals_are_measured():
    m = DecodeMode("auto", sample_interval=2.0)
    assert not m.keyframes_only and m.reason == "measuring the key-frame interval"
    _packets(m, 3.9, gop=2.0)  # key frames at 0 and 2: one interval
    assert not m.keyframes_only
    said = _packets(m, 0.2, gop=2.0, start=4.0)  # the third key frame
    assert m.keyframes_only and said and "key frames only" in said[0]
    assert "unseen" in m.info() and m.info()["mode"] == "keyframes"


@pytest.mark.parametrize("setting", ["keyframes", "auto"])
def test_a_gop_longer_than_the_sample_interval_falls_back_to_all_frames_saying_why(setting):
    m = DecodeMode(setting, sample_interval=1.0)
    said = _packets(m, 12, gop=4.0)
    assert not m.keyframes_only
    assert said[0] == f"decode {setting}: no key frame for 1.1 s, longer than the sample interval 1 s: all frames"
    assert m.info()["mode"] == "all" and "unseen" not in m.info()
    # the GOP shrinks to fit: back to key frames once the last three intervals fit
    said = _packets(m, 8, gop=1.0, start=12.0)
    assert m.keyframes_only and said[-1].endswith("key-frame interval 1.00 s <= sample interval 1 s")


def test_a_stream_without_key_frames_falls_back():
    """A camera with periodic intra refresh sends no key frame at all after the first."""
    m = DecodeMode("keyframes", sample_interval=2.0)
    said = [c for i in range(100) if (c := m.on_packet(i / FPS, False))]
    assert not m.keyframes_only and said[0].startswith("decode keyframes: no key frame for 2.1 s")


def test_all_never_changes():
    m = DecodeMode("all", sample_interval=0.5)
    assert _packets(m, 10, gop=0.2) == [] and not m.keyframes_only


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="decode must be one of all, keyframes, auto"):
        DecodeMode("some", 1.0)


# -- the real worker ------------------------------------------------------------------------

def _clip(path: Path, gop: int, seconds: float = 8.0, bframes: int = 0) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        vs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast",
                      "bf": str(bframes)}
        base = np.random.default_rng(0).integers(0, 255, (180, 320, 3), dtype=np.uint8)
        for i in range(int(seconds * FPS)):
            f = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, FPS)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gop")
    return {"gop1s": _clip(d / "gop1s.mp4", FPS), "gop4s": _clip(d / "gop4s.mp4", 4 * FPS),
            "gop04s": _clip(d / "gop04s.mp4", 10, seconds=6.0),
            "bframes": _clip(d / "bframes.mp4", FPS, seconds=4.0, bframes=2)}


class _Frames(StreamListener):
    def __init__(self):
        self.shed = 0
        self.decode_errors = 0
        self.pts: list[float] = []
        self.walls: list[float] = []
        self.states: list[str] = []
        self.timing: dict = {}
        self.ended = threading.Event()

    def on_state(self, stream, state, up, detail):
        self.states.append(state)
        if state in ("ended", "failed"):
            self.ended.set()

    def on_frame(self, msg):
        self.pts.append(round(msg.pts, 2))
        self.walls.append(msg.ts)

    def on_timing(self, stream, values):
        self.timing = dict(values)

    def on_shed(self, stream, count):
        self.shed += count

    def on_decode_errors(self, stream, count):
        self.decode_errors += count


def _run(url: Path, decode: str, rate: float, **extra) -> tuple[StreamWorker, _Frames]:
    cfg = StreamConfig(name="s", url=str(url), decode=decode, sample_rate=rate, **extra)
    listener = _Frames()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener)
    w.start()
    return w, listener


def _finish(w: StreamWorker, listener: _Frames, timeout: float = 30.0) -> None:
    try:
        wait_for(listener.ended.is_set, timeout, message="the file to end")
    finally:
        w.stop()
        w.join()


@pytest.mark.parametrize("decode, decoded", [("all", 200), ("keyframes", 8)])
def test_keyframes_mode_decodes_only_key_frames_and_still_samples_every_second(clips, decode, decoded):
    w, got = _run(clips["gop1s"], decode, 1.0, pace=False)
    _finish(w, got)
    assert got.pts == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert w.stream.decoded == decoded  # 8 s at 25 fps, a key frame every second
    info = w.stream.info["decode"]
    assert info["setting"] == decode and info["mode"] == decode
    assert ("unseen" in info) == (decode == "keyframes")


def test_keyframes_mode_falls_back_on_a_long_gop_and_samples_at_its_rate_from_the_next_key_frame(clips):
    w, got = _run(clips["gop4s"], "keyframes", 1.0, pace=False)
    _finish(w, got)
    # the decoder kept nothing between key frames: sampling resumes at the next one
    assert got.pts == [0.0, 4.0, 5.0, 6.0, 7.0]
    info = w.stream.info["decode"]
    assert info["mode"] == "all" and "no key frame for 1.1 s" in info["reason"]


def test_paced_keyframes_stream_is_up_between_key_frames_with_its_real_frame_rate(clips):
    """Key frames 1 s apart, ``stale`` after 0.6 s: progress is counted in packets, and the
    timing detectors see every packet, so neither a stall nor a frame-rate drop is reported."""
    w, got = _run(clips["gop1s"], "keyframes", 1.0, timeouts={"stale": 0.6})
    _finish(w, got, timeout=20)
    assert "stale" not in got.states
    assert got.timing["fps_ratio"] == pytest.approx(1.0, abs=0.2)
    assert w.stream.decoded == 8


def test_key_frames_of_a_stream_with_b_frames_come_out_at_once(clips):
    """A decoder that reorders holds a frame until more follow; with only key frames decoded
    those are the next key frames, two GOPs later. The worker drains each key frame instead."""
    stream = av.open(str(clips["bframes"])).streams.video[0]
    assert stream.codec_context.has_b_frames  # the clip reorders
    w, got = _run(clips["bframes"], "keyframes", 1.0)  # paced at real time
    _finish(w, got, timeout=20)
    assert got.pts == [0.0, 1.0, 2.0, 3.0]
    # each sample's wall time against its media time; held back, the first ones would come two
    # GOPs late and the last two together at the end of the file: a spread of a GOP (1 s)
    lags = [(wall - got.walls[0]) - pts for pts, wall in zip(got.pts, got.walls)]
    assert max(lags) - min(lags) < 0.5, lags


def test_a_looped_file_keeps_its_clock_when_only_key_frames_are_decoded(clips):
    """The loop restarts the clock after the file's last packet, not after its last key frame."""
    w, got = _run(clips["gop1s"], "keyframes", 1.0, pace=False, loop=True)
    try:
        wait_for(lambda: len(got.pts) >= 12, 30, message="12 samples")
    finally:
        w.stop()
        w.join()
    assert got.pts[:12] == [float(i) for i in range(12)]


def test_lag_reads_a_growing_backlog_not_jitter_or_a_slow_clock():
    now = [0.0]
    lag = Lag(drift=1e-3, clock=lambda: now[0])
    for i in range(100):  # on time, with up to 0.3 s of jitter
        now[0] = i * 0.04 + (0.3 if i % 7 == 0 else 0.0)
        assert lag.update(i * 0.04) <= 0.3 + 1e-9
    for i in range(100, 200):  # handled at half speed: the backlog grows
        now[0] = 4.0 + (i - 100) * 0.08
    assert lag.update(199 * 0.04) == pytest.approx(3.96 - 0.0079, abs=0.05)
    slow = Lag(drift=1e-3, clock=lambda: now[0])
    for i in range(1000):  # a camera clock 0.05 % slow: forgiven
        now[0] = i * 1.0005
        assert slow.update(float(i)) == 0.0


def _suspended_for_3_s(clip: Path, decode: str) -> _Frames:
    """A paced worker sampling 2.5/s, suspended for 3 s after its third sample (starved of CPU
    on a busy machine), run to the end of the file."""
    import os
    import signal

    w, got = _run(clip, decode, 2.5)
    try:
        wait_for(lambda: len(got.pts) >= 3, 20, message="three samples")
        os.kill(w.pid, signal.SIGSTOP)
        time.sleep(3.0)  # what is being measured: a worker that did not run for 3 s
        os.kill(w.pid, signal.SIGCONT)
        wait_for(got.ended.is_set, 20, message="the file to end")
    finally:
        w.stop()
        w.join()
    return got


def test_a_key_frame_worker_behind_real_time_skips_key_frames_and_counts_them(clips):
    """Behind real time, a paced key-frame worker skips the key frames it is late for, counting
    them (``decoder_behind``), and catches up, instead of staying 3 s behind."""
    got = _suspended_for_3_s(clips["gop04s"], "keyframes")  # key frames 0.4 s apart, sampled each
    assert got.shed >= 5
    after = [t for t in got.pts if t > 3.0]
    assert after and len(got.pts) + got.shed == 15  # every key frame is scored or counted


def test_an_all_frames_worker_behind_real_time_skips_to_a_key_frame_and_counts_the_samples(clips):
    """The same with every frame decoded: behind by more than 1 s, the worker stops decoding and
    skips packets up to a key frame it reaches caught up, counting the samples due meanwhile,
    then decodes all frames from there at real time (no decode error: it resumes at a key frame)."""
    got = _suspended_for_3_s(clips["gop04s"], "all")
    assert got.shed >= 5
    assert len(got.pts) + got.shed == 15  # every sample is scored or counted
    # after the catch-up the samples keep to real time again: media time against wall time
    after = [(pts, wall) for pts, wall in zip(got.pts, got.walls) if pts > got.pts[2] + 3.0]
    assert len(after) >= 2
    lags = [(wall - after[0][1]) - (pts - after[0][0]) for pts, wall in after]
    assert max(lags) < 0.5, lags
    assert got.decode_errors == 0


def test_catch_up_skips_while_behind_and_resumes_only_at_a_key_frame_caught_up():
    c = CatchUp()
    assert c.decode(0.9, False) and c.decode(0.9, True)  # under a second behind: decode all
    assert not c.decode(1.2, False)  # behind: skip
    assert not c.decode(0.4, False)  # caught up, but not at a key frame: frames would be broken
    assert not c.decode(0.8, True)  # a key frame, but still more than half a second behind
    assert c.decode(0.4, True) and c.decode(0.9, False)  # resumed at a key frame caught up


def test_check_config_summary_says_what_key_frames_only_cannot_see():
    cfg = config_from_dict({"streams": [{"name": "cam", "url": "rtsp://127.0.0.1/x", "decode": "auto"},
                                        {"name": "qc", "url": "rtsp://127.0.0.1/y"}]})
    lines = cfg.summary().splitlines()
    cam = next(line for line in lines if line.startswith("  cam:"))
    qc = next(line for line in lines if line.startswith("  qc:"))
    assert "decode auto" in cam and all(limit in cam for limit in KEYFRAME_LIMITS)
    assert "decode" not in qc


def test_a_bad_decode_setting_names_the_field():
    from monitor.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="decode"):
        config_from_dict({"streams": [{"name": "cam", "url": "x.mp4", "decode": "iframes"}]})
