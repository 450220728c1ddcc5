"""A backward timestamp jump inside a file is a pts_jump; the monitor's own loop restarts are not
(issue 20, F3).

``cat a.ts a.ts a.ts``: at each splice the PTS falls back by the clip's length. The worker keeps
its own clock advancing for sampling and records, but its timing detectors must see the
media's timestamps, so QC hears about the splice. Looping ``a.ts`` itself (the monitor
reopening the file) must stay quiet.
"""
from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import wait_for
from engines.views import InputView
from monitor.alerts import AlertEngine
from monitor.config import config_from_dict
from monitor.source import StreamListener, StreamWorker

FPS = 25
FRAMES = 50  # 2 s per copy


@pytest.fixture(scope="module")
def clip_ts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("splice") / "a.ts"
    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = 160, 120, "yuv420p", {"preset": "ultrafast"}
        for i in range(FRAMES):
            rgb = np.full((120, 160, 3), (i * 5) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class _Timing(StreamListener):
    def __init__(self):
        self.timing: list[dict] = []
        self.frames: list[float] = []
        self.final = threading.Event()
        self.lock = threading.Lock()

    def on_state(self, stream, state, up, detail):
        if state in ("ended", "failed"):
            self.final.set()

    def on_timing(self, stream, values):
        with self.lock:
            self.timing.append(dict(values))

    def on_frame(self, msg):
        self.frames.append(msg.pts)

    def max_jumps(self) -> float:
        with self.lock:
            return max((v.get("pts_jumps", 0.0) for v in self.timing), default=0.0)


def _worker(url: Path, **extra) -> tuple[StreamWorker, _Timing]:
    cfg = config_from_dict({"streams": [{"name": "splice", "url": str(url), "pace": False, "sample_rate": 5,
                                         "decoder": "software", **extra}]}).streams[0]
    listener = _Timing()
    w = StreamWorker(cfg, InputView(mode="resize", size=32), listener)
    w.start()
    return w, listener


def _fires_pts_jump(values: dict) -> bool:
    engine = AlertEngine(snapshots=False)
    events = engine.update("splice", values, 1000.0)
    return any(e.condition == "pts_jump" and e.kind == "start" for e in events)


def test_a_splice_in_a_file_is_a_pts_jump(tmp_path, clip_ts):
    spliced = tmp_path / "aaa.ts"
    spliced.write_bytes(clip_ts.read_bytes() * 3)  # cat a.ts a.ts a.ts
    w, listener = _worker(spliced)
    try:
        assert listener.final.wait(60), "the worker did not reach the end of the file"
        wait_for(lambda: not w.is_alive(), 15, message="the worker to exit")
    finally:
        w.stop()
        w.join(5)
    last = listener.timing[-1]  # the worker's final tick, after the last frame
    assert last["pts_jumps"] == 2, listener.timing[-3:]
    assert last["pts_jump_max_seconds"] == pytest.approx((FRAMES - 1) / FPS, abs=0.05)
    assert _fires_pts_jump(last)
    # the records' clock still runs forward (sampling and pacing are not thrown back)
    assert listener.frames == sorted(listener.frames) and listener.frames[-1] > 5.5


def test_the_monitors_own_loop_is_not_a_pts_jump(clip_ts):
    w, listener = _worker(clip_ts, loop=True)
    try:
        wait_for(lambda: w.stream.decoded >= 4 * FRAMES, 60, interval=0.05, message="four loops of the clip")
        seen = len(listener.timing)
        wait_for(lambda: len(listener.timing) > seen, 5, interval=0.05, message="a tick after them")
    finally:
        w.stop()
        w.join(5)
    assert listener.max_jumps() == 0, [v for v in listener.timing if v.get("pts_jumps")][:3]
    assert not _fires_pts_jump(listener.timing[-1])
