"""Monitor building blocks without servers: sampling, pacing, backoff, batching, map encoding."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from conftest import finishes_within, wait_for
from engines.types import Prediction, RegionMap
from engines.views import InputView
from monitor.batcher import Batcher
from monitor.metrics import Metrics
from monitor.sampler import Backoff, Pacer, Sampler
from monitor.sinks.redis_sink import decode_map, dumps_detectors, encode_map
from monitor.sinks.redis_writer import RedisMetrics, RedisWriter
from monitor.source import FrameMessage
from monitor.worker_setup import protocol_options


def test_sampler_takes_one_frame_per_interval():
    s = Sampler(0.5)
    taken = [t for t in np.arange(0, 10, 0.04) if s.take(float(t))]
    assert len(taken) == 20
    assert np.allclose(np.diff(taken), 0.52, atol=0.05)


def test_sampler_restarts_on_discontinuity():
    s = Sampler(1.0, max_jump=5.0)
    assert s.take(100.0)
    assert not s.take(100.5)
    assert s.take(3.0)          # clock went backwards (loop / reconnect): take at once
    assert not s.take(3.5)
    assert s.take(500.0)        # leap forward: take at once, not a burst
    assert not s.take(500.2)


def test_pacer_holds_back_to_real_time():
    now = [0.0]
    p = Pacer(clock=lambda: now[0])
    assert p.delay(10.0) == 0.0
    assert p.delay(10.5) == pytest.approx(0.5)
    now[0] = 0.5
    assert p.delay(10.5) == pytest.approx(0.0)
    now[0] = 10.0                      # far behind: no catching up race
    assert p.delay(11.0) == 0.0
    assert p.delay(0.0) == 0.0         # loop back: re-anchored


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(1.0, 8.0, 2.0, 0.25, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    for d, base in zip(delays, [1, 2, 4, 8, 8, 8, 8, 8]):
        assert base * 0.75 - 1e-9 <= d <= base * 1.25 + 1e-9
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 1.25


def test_protocol_options_bound_io():
    assert protocol_options("rtsp", 5, 7) == {"rtsp_transport": "tcp", "timeout": "7000000"}
    assert protocol_options("https", 5, 2)["rw_timeout"] == "2000000"
    assert protocol_options("udp", 5, 2)["timeout"] == "2000000"
    assert protocol_options("srt", 5, 3) == {"rw_timeout": "3000000"}
    assert protocol_options("file", 5, 3) == {}


def test_map_encoding_roundtrip():
    values = np.linspace(0, 100, 12 * 12, dtype=np.float32).reshape(12, 12)
    data = encode_map(values)
    assert len(data) == 12 * 12 * 2
    back = decode_map(data, b"12,12")
    assert back.dtype == np.float32 and back.shape == (12, 12)
    assert np.allclose(back, values, atol=0.05)
    assert dumps_detectors({"a": float("nan"), "b": 1.5, "c": np.float32(2)}) == '{"a":null,"b":1.5,"c":2.0}'


class FakeEngine:
    input_size = 32
    view = InputView(mode="resize", size=32)
    max_batch = 4
    info = {"backend": "fake", "trained": True}

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate  # when given, every batch waits for it: the test decides when scoring ends
        self.batches: list[int] = []

    def score(self, frames, draws=1, frame_sizes=None):
        self.batches.append(len(frames))
        if self.gate is not None:
            assert self.gate.wait(30), "the test never released the scorer"
        sizes = frame_sizes or [f.shape[:2] for f in frames]
        return [Prediction(float(f.mean()) / 2.55, RegionMap(np.full((3, 3), f.mean() / 2.55, np.float32), h, w))
                for f, (h, w) in zip(frames, sizes)]


def _frame(stream: str, seq: int, value: int = 100) -> FrameMessage:
    return FrameMessage(stream, seq, seq * 0.5, time.time(), 1920, 1080, np.full((32, 32, 3), value, np.uint8))


def test_batcher_batches_streams_and_keeps_only_latest_frame():
    release = threading.Event()
    eng = FakeEngine(gate=release)
    results, drops = [], []
    b = Batcher({"m": eng}, {f"s{i}": "m" for i in range(6)}, max_batch=4, max_wait=0.05,
                on_result=results.append, on_drop=lambda s, r, n: drops.append((s, r)))
    b.start()
    b.submit(_frame("s0", 1))
    wait_for(lambda: eng.batches == [1], 30, interval=0.01, message="the first batch (s0 alone) being scored")
    for seq in (2, 3, 4):  # scorer busy: only the latest of s0 survives
        b.submit(_frame("s0", seq))
    for i in range(1, 6):
        b.submit(_frame(f"s{i}", 1))
    release.set()
    wait_for(lambda: len(results) >= 7, 30, interval=0.01, message="seven scored frames")
    b.stop()
    assert drops == [("s0", "scorer_behind"), ("s0", "scorer_behind")]
    assert [r.frame.seq for r in results if r.frame.stream == "s0"] == [1, 4]
    assert len(results) == 7 and max(eng.batches) == 4 and eng.batches[0] == 1
    r = results[-1]
    assert (r.region_map.frame_width, r.region_map.frame_height) == (1920, 1080)  # original size
    assert r.region_map.cell_box(2, 2) == (1280, 720, 1920, 1080)


def test_batcher_scores_batches_side_by_side_one_frame_per_stream_in_flight():
    """An engine with ``parallel = 3`` gets three scoring threads: batches are scored at once, a
    stream's next frame waits for its previous one even with a thread free (its results stay in
    order), and results are handed on one batch at a time."""
    release = threading.Event()

    class TwoAtOnce(FakeEngine):
        parallel, max_batch = 3, 1

        def __init__(self):
            super().__init__(gate=release)
            self.running = self.most = 0
            self.lock = threading.Lock()

        def score(self, frames, draws=1, frame_sizes=None):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                return super().score(frames, draws, frame_sizes)
            finally:
                with self.lock:
                    self.running -= 1

    eng = TwoAtOnce()
    results, delivering = [], []

    def on_result(r):
        delivering.append(r)
        assert len(delivering) - len(results) == 1, "two batches delivered at once"
        time.sleep(0.01)  # widen the window in which a second delivery would overlap
        results.append(r)

    b = Batcher({"m": eng}, {"a": "m", "b": "m"}, max_wait=0.0, on_result=on_result)
    b.start()
    b.submit(_frame("a", 1))
    b.submit(_frame("b", 1))
    wait_for(lambda: eng.running == 2, 30, interval=0.01, message="two batches being scored at once")
    b.submit(_frame("a", 2))  # a's first frame is still being scored: this one must wait
    time.sleep(0.1)  # a free thread would have taken it by now
    assert eng.batches == [1, 1]
    release.set()
    wait_for(lambda: len(results) == 3, 30, interval=0.01, message="three scored frames")
    b.stop()
    assert eng.most == 2 and len(b._threads) == 3
    assert [r.frame.seq for r in results if r.frame.stream == "a"] == [1, 2]


def test_batcher_survives_engine_errors():
    class Broken(FakeEngine):
        def score(self, frames, **_):
            raise RuntimeError("boom")
    drops = []
    b = Batcher({"m": Broken()}, {"a": "m"}, on_drop=lambda s, r, n: drops.append(r))
    b.start()
    b.submit(_frame("a", 1))
    wait_for(lambda: drops, 30, interval=0.02, message="the failed batch counted")
    b.stop()
    assert drops == ["score_error"]


def test_sink_buffer_is_bounded_and_counts_losses():
    m = RedisMetrics()
    sink = RedisWriter("redis://127.0.0.1:1/0", buffer_size=5, metrics=m, socket_timeout=0.2)
    # not started: nothing is written, the buffer keeps the newest 5
    for i in range(12):
        sink.put_record("a", {"i": str(i)}, ts=1000.0 + i)
    assert sink.buffered == 5
    assert m.registry.get_sample_value("vqmon_redis_records_lost_total") == 7
    assert m.registry.get_sample_value("vqmon_redis_buffered_records") == 5
    assert [r.fields["i"] for r in sink._records] == ["7", "8", "9", "10", "11"]
    # ids follow decode time and stay unique within a millisecond
    sink.put_record("b", {}, ts=2000.0)
    sink.put_record("b", {}, ts=2000.0)
    assert [r.entry_id for r in sink._records if r.stream == "b"] == ["2000000-0", "2000000-1"]


def test_sink_stop_without_redis_counts_buffer_as_lost():
    m = RedisMetrics()
    sink = RedisWriter("redis://127.0.0.1:1/0", buffer_size=100, metrics=m, socket_timeout=0.2)
    sink.start()
    for i in range(3):
        sink.put_record("a", {"i": str(i)}, ts=1000.0 + i)
    finishes_within(60, sink.stop, flush_timeout=0.5, what="stop with Redis unreachable")  # no hang
    assert m.registry.get_sample_value("vqmon_redis_records_lost_total") == 3
    assert not threading.Thread.is_alive(sink._thread)
