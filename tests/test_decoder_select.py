"""Decoder choice per stream (monitor.decoder): NVDEC when it works, else software, or a clear failure.

These run against the real FFmpeg in PyAV's wheel. Its build lists the cuvid decoders, but
opening one needs NVIDIA's driver libraries; where they are missing (CI, this VM) ``auto``
must fall back and ``nvdec`` must fail. On a machine where NVDEC opens, the tests check the
hardware choice instead.

NVDEC failing mid-stream (it opens, then errors on packets) is exercised with real FFmpeg
decoders of other codecs standing in for it: put in the NVDEC table for H.264, they open on
the clip's stream and then fail on its packets, each in one of the ways NVDEC can.
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import wait_for
from engines.views import InputView
from monitor.config import config_from_dict
import monitor.decoder
from monitor.decoder import HW_INVALID_LIMIT, Decoder, DecoderUnavailable, open_context, select_decoder
from monitor.source import StreamListener, StreamWorker

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "monitor" / "samples" / "bikes.mp4"  # H.264, 640x272, 250 frames


def _nvdec_error() -> str | None:
    """None when h264_cuvid opens here, else FFmpeg's reason."""
    with av.open(str(CLIP)) as c:
        try:
            open_context("h264_cuvid", c.streams.video[0])
        except RuntimeError as e:
            return str(e)
    return None


NVDEC_ERROR = _nvdec_error()
_nvdec_works = pytest.mark.skipif(NVDEC_ERROR is None, reason="NVDEC works here: fallback paths not reachable")


def needs_no_nvdec(test):
    """The fallback paths: reachable only where NVDEC fails (a skip allowed in strict mode)."""
    return pytest.mark.gpu(_nvdec_works(test))


@pytest.fixture
def stream():
    with av.open(str(CLIP)) as c:
        yield c.streams.video[0]


@needs_no_nvdec
def test_auto_falls_back_to_software_with_the_reason(stream):
    d = select_decoder(stream, "auto")
    assert (d.name, d.hardware, d.context) == ("h264", False, None)
    assert d.fallback.startswith("h264_cuvid unavailable: ") and len(d.fallback) > len("h264_cuvid unavailable: ")
    assert d.detail == f"h264 (software; {d.fallback})"


@needs_no_nvdec
def test_nvdec_strict_fails_naming_the_decoder_and_why(stream):
    with pytest.raises(DecoderUnavailable) as e:
        select_decoder(stream, "nvdec")
    msg = str(e.value)
    assert msg.startswith("decoder nvdec: h264_cuvid unavailable: ")
    assert NVDEC_ERROR in msg  # FFmpeg's own lines, e.g. "Cannot load libnvcuvid.so.1"


@pytest.mark.gpu
@pytest.mark.skipif(NVDEC_ERROR is not None, reason=f"no NVDEC here ({NVDEC_ERROR})")
def test_auto_and_nvdec_use_nvdec_where_it_opens(stream):
    for mode in ("auto", "nvdec"):
        d = select_decoder(stream, mode)
        assert (d.name, d.hardware, d.fallback) == ("h264_cuvid", True, None)


def test_software_never_tries_nvdec(stream):
    d = select_decoder(stream, "software")
    assert (d.name, d.hardware, d.fallback, d.context, d.detail) == ("h264", False, None, None, "h264 (software)")


def test_unknown_mode_is_refused(stream):
    with pytest.raises(ValueError, match="auto, software, nvdec"):
        select_decoder(stream, "gpu")


def test_codec_without_nvdec_decoder(tmp_path):
    path = tmp_path / "ffv1.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            img = np.full((48, 64, 3), 40 * i, np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert select_decoder(vs, "auto").fallback == "no NVDEC decoder for codec ffv1"
        with pytest.raises(DecoderUnavailable, match="no NVDEC decoder for codec ffv1"):
            select_decoder(vs, "nvdec")


def test_separately_opened_context_decodes_like_the_streams_own():
    """The plumbing NVDEC uses (a context opened by name), with the software decoder standing in."""
    def decode_all(make_decoder):
        with av.open(str(CLIP)) as c:
            vs = c.streams.video[0]
            d = make_decoder(vs)
            return [(f.time, f.width, f.height) for p in c.demux(vs) for f in d.decode(p)]

    own = decode_all(lambda vs: Decoder("h264", False, "h264 (software)"))
    named = decode_all(lambda vs: Decoder("h264", False, "h264", context=open_context("h264", vs)))
    assert len(own) == 250 and named == own


# -- the worker process ------------------------------------------------------------------------

class _Listener(StreamListener):
    def __init__(self):
        self.frames = 0
        self.states: list[tuple[str, dict]] = []
        self.final: str | None = None  # "ended" or "failed" (stopping adds "stopped" after it)
        self.event = threading.Event()

    def on_state(self, stream, state, up, detail):
        self.states.append((state, detail))
        if state in ("failed", "ended") and self.final is None:
            self.final = state
            self.event.set()

    def on_frame(self, msg):
        self.frames += 1


def _run_worker(decoder: str, timeout: float = 60.0, python: str | None = None,
                **extra) -> tuple[StreamWorker, _Listener]:
    """Run a worker on the clip until it ends or fails; the listener holds what it reported."""
    cfg = config_from_dict({"streams": [{"name": "clip", "url": str(CLIP), "decoder": decoder, "pace": False,
                                         "sample_rate": 2, "detectors": {"enabled": False}, **extra}]}).streams[0]
    listener = _Listener()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener, python=python)
    w.start()
    try:
        assert listener.event.wait(timeout), f"worker did not finish: {listener.states}"
        wait_for(lambda: not w.is_alive(), 15, message="the supervisor to see the worker exit")
    finally:
        w.stop()
        w.join(5)
    return w, listener


@needs_no_nvdec
def test_worker_in_auto_mode_decodes_in_software_says_why_once(caplog):
    caplog.set_level(logging.INFO, logger="monitor.source")
    w, listener = _run_worker("auto", loop=False)
    assert listener.final == "ended" and listener.frames >= 8  # a 10 s clip at 2 samples/s
    assert w.stream.info["decoder"].startswith("h264 (software; h264_cuvid unavailable: ")
    notes = [r for r in caplog.records if "NVDEC not used" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


def test_stream_in_auto_mode_is_scored_by_the_model(monitor_factory, waiter):
    m = monitor_factory({"streams": [{"name": "clip", "url": str(CLIP), "decoder": "auto", "sample_rate": 2,
                                      "detectors": {"enabled": False}}], "redis": {"enabled": False}})
    scored = lambda: m.metrics.registry.get_sample_value("vqmon_frames_scored_total", {"stream": "clip"}) or 0  # noqa: E731
    waiter(lambda: scored() >= 3, 60, message="3 scored frames")
    detail = m.streams["clip"].info["decoder"]
    assert detail == "h264_cuvid (NVDEC)" if NVDEC_ERROR is None else detail.startswith("h264 (software; ")


@needs_no_nvdec
def test_worker_logs_the_fallback_once_across_reopens(caplog):
    caplog.set_level(logging.INFO, logger="monitor.source")
    cfg = config_from_dict({"streams": [{"name": "clip", "url": str(CLIP), "pace": False, "loop": True,
                                         "detectors": {"enabled": False}}]}).streams[0]
    listener = _Listener()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener)
    w.start()
    try:  # three passes over the 250-frame file: it was reopened twice
        wait_for(lambda: w.stream.decoded > 600, 30, message="two reopens of the looped file")
    finally:
        w.stop()
        w.join(5)
    assert sum("NVDEC not used" in r.getMessage() for r in caplog.records) == 1


@needs_no_nvdec
def test_worker_in_nvdec_mode_fails_the_stream_clearly():
    w, listener = _run_worker("nvdec", timeout=30)
    assert listener.final == "failed" and w.terminal and listener.frames == 0
    assert w.stream.error.startswith("decoder nvdec: h264_cuvid unavailable: ")


def test_worker_in_software_mode_says_so():
    w, listener = _run_worker("software")
    assert listener.final == "ended" and listener.frames >= 8
    assert w.stream.info["decoder"] == "h264 (software)"


def test_config_rejects_unknown_decoder():
    from monitor.config import ConfigError
    with pytest.raises(ConfigError, match="decoder"):
        config_from_dict({"streams": [{"name": "a", "url": str(CLIP), "decoder": "cuda"}]})


# -- NVDEC that opens and then fails mid-stream ----------------------------------------------
# Real decoders that open on the clip's H.264 stream and fail on its packets (checked against
# this FFmpeg): h263 refuses every packet with EPERM, the error NVDEC gives when it cannot run
# (an FFmpeg error other than "invalid data": switch at once); mjpeg calls every packet invalid
# data (switch after HW_INVALID_LIMIT in a row).
STAND_INS = {"h263": "PermissionError: Operation not permitted",
             "mjpeg": f"{HW_INVALID_LIMIT} undecodable packets in a row (InvalidDataError: "}


def _decode_clip(stream, decoder: Decoder) -> tuple[list[float], int]:
    """Frame times out of ``decoder`` for every packet, and the packets it refused (as the worker does)."""
    times, refused = [], 0
    for packet in stream.container.demux(stream):
        try:
            times += [f.time for f in decoder.decode(packet)]
        except (av.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError):
            refused += 1
    return times, refused


@pytest.mark.parametrize("stand_in", sorted(STAND_INS))
def test_auto_switches_to_software_when_nvdec_fails_mid_stream(monkeypatch, stand_in):
    with av.open(str(CLIP)) as c:
        software, _ = _decode_clip(c.streams.video[0], Decoder("h264", False, "h264 (software)"))
    monkeypatch.setitem(monitor.decoder.CUVID_DECODERS, "h264", stand_in)
    with av.open(str(CLIP)) as c:
        vs = c.streams.video[0]
        d = select_decoder(vs, "auto")
        assert (d.name, d.hardware, d.switched) == (stand_in, True, None)  # it opened: "NVDEC" in use
        times, refused = _decode_clip(vs, d)
        assert d.switched.startswith(f"{stand_in} failed mid-stream: {STAND_INS[stand_in]}")
        assert (d.name, d.hardware, d.context, d.fallback) == ("h264", False, None, d.switched)
        assert d.detail == f"h264 (software; {d.switched})"
        # a reconnect told why goes straight to software, with the same reason
        again = select_decoder(vs, "auto", failed=d.switched)
        assert (again.name, again.hardware, again.context, again.detail) == ("h264", False, None, d.detail)
    if stand_in == "h263":  # refused at the first packet, which software then decodes: nothing lost
        assert refused == 0 and times == software
    else:  # the packets before the switch are lost, then software waits for the next keyframe (30)
        assert refused == HW_INVALID_LIMIT - 1
        assert set(times) <= set(software) and len(software) - 30 <= len(times) < len(software)


@pytest.mark.parametrize("stand_in", sorted(STAND_INS))
def test_nvdec_mode_never_switches(monkeypatch, stand_in):
    monkeypatch.setitem(monitor.decoder.CUVID_DECODERS, "h264", stand_in)
    with av.open(str(CLIP)) as c:
        vs = c.streams.video[0]
        d = select_decoder(vs, "nvdec")
        packets = c.demux(vs)
        for _ in range(2 * HW_INVALID_LIMIT):
            with pytest.raises(av.FFmpegError):
                d.decode(next(packets))
        assert (d.name, d.hardware, d.switched, d.fallback) == (stand_in, True, None, None)


def test_invalid_data_switches_only_after_a_run_of_it(tmp_path, monkeypatch):
    """One corrupt packet is the stream's fault, not NVDEC's: only a run of them switches."""
    path = tmp_path / "mjpeg.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(4):
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")))
        out.mux(s.encode())
    monkeypatch.setitem(monitor.decoder.CUVID_DECODERS, "mjpeg", "mjpeg")  # the real one as "NVDEC"
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        good = [p for p in c.demux(vs) if p.size]
        d = select_decoder(vs, "auto")

        def corrupt():
            p = av.Packet(b"not a jpeg")
            p.stream = vs
            with pytest.raises(av.InvalidDataError):  # before the switch from NVDEC, after it from software
                d.decode(p)

        for packet in good[:2]:
            for _ in range(HW_INVALID_LIMIT - 1):
                corrupt()
            assert len(d.decode(packet)) == 1 and d.hardware and d.switched is None
        for _ in range(HW_INVALID_LIMIT):
            corrupt()
        assert not d.hardware and d.switched.startswith(f"mjpeg failed mid-stream: {HW_INVALID_LIMIT} undecodable")
        assert len(d.decode(good[2])) == 1  # software goes on


MID_STREAM = "h263 failed mid-stream: PermissionError: Operation not permitted"


@pytest.fixture
def stand_in_python(tmp_path) -> str:
    """An interpreter for the real worker process that puts h263 in as H.264's NVDEC first."""
    python = tmp_path / "python"
    python.write_text(f"""#!{sys.executable}
import runpy
import monitor.decoder
monitor.decoder.CUVID_DECODERS["h264"] = "h263"
runpy.run_module("monitor.worker", run_name="__main__")  # what "-m monitor.worker" runs
""")
    python.chmod(0o755)
    return str(python)


def test_worker_shows_the_mid_stream_switch_and_decodes_on(stand_in_python):
    w, listener = _run_worker("auto", python=stand_in_python, loop=False)  # one pass: no reopen to re-report
    assert listener.final == "ended" and listener.frames >= 8 and w.stream.decoded == 250
    assert w.stream.info["decoder"] == f"h264 (software; {MID_STREAM})"


def test_worker_notes_the_switch_once_and_keeps_software_across_reopens(stand_in_python, caplog):
    caplog.set_level(logging.INFO, logger="monitor.source")
    cfg = config_from_dict({"streams": [{"name": "clip", "url": str(CLIP), "pace": False, "loop": True,
                                         "sample_rate": 2, "detectors": {"enabled": False}}]}).streams[0]
    listener = _Listener()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener, python=stand_in_python)
    w.start()
    try:  # three passes over the 250-frame file: it was reopened twice
        wait_for(lambda: w.stream.decoded > 600, 30, message=f"two reopens of the looped file ({w.stream.error})")
    finally:
        w.stop()
        w.join(5)
    assert listener.frames > 0 and w.stream.reconnects == 0 and w.stream.error is None
    assert w.stream.info["decoder"] == f"h264 (software; {MID_STREAM})"
    notes = [(r.levelno, r.getMessage()) for r in caplog.records if "decoder auto" in r.getMessage()]
    assert notes == [(logging.INFO, f"stream clip: decoder auto: software decode from now on ({MID_STREAM})")]


def test_a_respawned_worker_process_keeps_software_after_the_switch(stand_in_python, caplog):
    caplog.set_level(logging.INFO, logger="monitor.source")
    cfg = config_from_dict({"streams": [{"name": "clip", "url": str(CLIP), "pace": False, "loop": True,
                                         "sample_rate": 2, "detectors": {"enabled": False},
                                         "reconnect": {"initial_delay": 0.1}}]}).streams[0]
    listener = _Listener()
    w = StreamWorker(cfg, InputView(mode="resize", size=64), listener, python=stand_in_python)
    w.start()
    try:
        wait_for(lambda: w.stream.info.get("nvdec_failed") == MID_STREAM, 30, message="the mid-stream switch")
        assert w.spec().nvdec_failed == MID_STREAM  # what a respawned process is told
        first = w._proc
        first.kill()  # as the hang watchdog would
        wait_for(lambda: w._proc is not first and w.stream.state == "up" and w.stream.decoded > 300, 30,
                 message=f"a respawned worker decoding ({w.stream.error})")
    finally:
        w.stop()
        w.join(5)
    msgs = [r.getMessage() for r in caplog.records if "decoder auto" in r.getMessage()]
    # the new process went straight to software, saying why, and never switched again
    assert msgs == [f"stream clip: decoder auto: software decode from now on ({MID_STREAM})",
                    f"stream clip: decoder auto: software decode, NVDEC not used ({MID_STREAM})"]
    assert w.stream.info["decoder"] == f"h264 (software; {MID_STREAM})" and w.stream.info["nvdec_failed"] == MID_STREAM
