"""Soak: a decoder worker looping a file under ``decoder: auto`` keeps a flat memory (issue 20, F2).

Where NVDEC cannot open (CI, this VM), ``auto`` tries it at every reopen of a looped file and
falls back to software. The failed try used to keep the stream (so the closed container and
its decoder's frame buffers) alive in a reference cycle until a full garbage collection: a
720p yuv444p clip grew a worker by ~6 MB a loop (82 -> 500+ MB in a minute). Here one worker
loops a short clip of that kind unpaced; its RSS (``/proc/PID/status``) after the warm-up
loops must stay within ``GROWTH_BOUND_MB`` over ``LOOPS`` more loops.
"""
from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from conftest import wait_for
from engines.views import InputView
from monitor.config import config_from_dict
from monitor.source import StreamListener, StreamWorker

FRAMES = 30            # frames in the clip (one loop)
WARMUP_LOOPS = 3       # loops before the baseline RSS (decoder buffers, imports, caches settle)
LOOPS = 40             # loops measured after it
GROWTH_BOUND_MB = 40   # most a worker may grow over them (the leak: ~6 MB a loop, ~240 MB)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """1280x720 yuv444p H.264 (as cockatoo.mp4, where the soak found the leak), ``FRAMES`` frames."""
    path = tmp_path_factory.mktemp("soak") / "clip.mp4"
    yy, xx = np.mgrid[0:720, 0:1280]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 1280, 720, "yuv444p", {"preset": "ultrafast"}
        for i in range(FRAMES):
            rgb = np.stack([(xx + 8 * i) % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class _Errors(StreamListener):
    def __init__(self):
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def on_state(self, stream, state, up, detail):
        if detail.get("error"):
            with self.lock:
                self.errors.append(detail["error"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_rss_stays_flat_over_loops_under_decoder_auto(clip):
    cfg = config_from_dict({"streams": [{"name": "soak", "url": str(clip), "decoder": "auto", "loop": True,
                                         "pace": False, "sample_rate": 0.5,
                                         "detectors": {"enabled": False}}]}).streams[0]
    listener = _Errors()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener)
    w.start()
    try:
        wait_for(lambda: w.stream.decoded >= WARMUP_LOOPS * FRAMES, 60, interval=0.05, message="the warm-up loops")
        pid = w._proc.pid
        base = rss_mb(pid)
        samples = [(w.stream.decoded / FRAMES, base)]

        def measured_all() -> bool:
            samples.append((w.stream.decoded / FRAMES, rss_mb(pid)))
            return w.stream.decoded >= (WARMUP_LOOPS + LOOPS) * FRAMES

        wait_for(measured_all, 150, interval=0.1, message=f"{LOOPS} more loops")
        assert w._proc.pid == pid, "the worker process was replaced during the soak"
        assert not listener.errors, listener.errors
    finally:
        w.stop()
        w.join(5)
    peak = max(mb for _, mb in samples)
    trace = ", ".join(f"{loops:.0f}:{mb:.0f}" for loops, mb in samples[::max(1, len(samples) // 12)])
    assert peak - base <= GROWTH_BOUND_MB, (
        f"worker RSS grew {peak - base:.0f} MB over {LOOPS} loops (bound {GROWTH_BOUND_MB} MB; "
        f"base {base:.0f} MB; loop:MB {trace})")
