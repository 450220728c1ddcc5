"""Stream workers: one PyAV decoding process per stream, supervised from the monitor.

Why a process: ``av.open`` and reads can block inside FFmpeg (a camera that accepts the TCP
connection and then sends nothing, a half-open socket). PyAV's interrupt timeouts and the
protocols' socket timeouts (``timeout``/``rw_timeout``) catch most of that; the process is
the backstop: the supervisor kills it when it shows no sign of life for ``timeouts.hang``
seconds and starts a new one. A worker that crashes, segfaults or leaks takes only its own
stream down.

The worker (``python -m monitor.source``, spec as one JSON line on stdin) opens the source,
decodes the video stream, picks frames ``1/sample_rate`` seconds apart, resizes them in
swscale to the model's ``SxS`` RGB input (``frame.reformat``) and sends them to the
supervisor over its stdout pipe, so only small frames cross processes. It runs the picture
detectors (``monitor.detectors``) on its own, larger frame that never leaves the process,
reconnects with exponential backoff and jitter, paces files at real time and loops them on
request.

Wire format (worker -> supervisor): ``<u32 header length><u32 payload length>`` then a JSON
header and the payload (the raw ``SxSx3`` uint8 frame for ``frame`` messages).
"""
from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .decoder import DecoderUnavailable, select_decoder
from engines.views import InputView

from .media import detector_frame, luma_plane, model_input
from .netdiag import unresolved_host
from .sampler import Backoff, Pacer, Sampler

DISPLAY_SIZE = 384  # side of the whole-frame picture a worker sends with each sample

if TYPE_CHECKING:
    from .config import StreamConfig
    from .stream_state import StreamState

log = logging.getLogger(__name__)

_HDR = struct.Struct("<II")
EXIT_ENDED = 0     # a non-looping file reached its end
EXIT_FAILED = 3    # a permanent error (non-looping file that cannot be read)
TICK_EVERY = 0.5   # seconds between liveness messages from a worker

# -------------------------------------------------------------------------------------------
# the worker process
# -------------------------------------------------------------------------------------------


class _Channel:
    """Framed messages to the supervisor over a private copy of stdout."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, header: dict, payload: bytes | memoryview = b"") -> None:
        h = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
        self._write(_HDR.pack(len(h), len(payload)) + h)
        if payload:
            self._write(payload)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def protocol_options(scheme: str, open_timeout: float, read_timeout: float) -> dict[str, str]:
    """FFmpeg options that bound blocking I/O for each protocol (microseconds)."""
    us = str(int(read_timeout * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        # FFmpeg >= 5: 'timeout' is the RTSP socket I/O timeout (it was 'stimeout' before)
        return {"rtsp_transport": "tcp", "timeout": us}
    if scheme in ("http", "https", "hls"):
        return {"rw_timeout": us, "timeout": us}
    if scheme in ("udp", "rtp"):
        return {"timeout": us, "overrun_nonfatal": "1", "fifo_size": "278876"}
    if scheme == "file":
        return {}
    # rtmp, srt, tcp, tls, ...: the generic AVIO read/write timeout
    return {"rw_timeout": us}


def _describe(exc: BaseException) -> str:
    """A short, stable description of a PyAV/OS error (without the URL PyAV appends)."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return f"{type(exc).__name__}: {strerror}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


class _Worker:
    def __init__(self, spec: dict, chan: _Channel):
        self.spec = spec
        self.chan = chan
        self.name = spec["name"]
        self.is_file = bool(spec["is_file"])
        self.loop = bool(spec.get("loop", False))
        pace = spec.get("pace")
        # files: real time unless told otherwise; network sources are live (their sender paces
        # them) unless ``pace: true`` asks to pace e.g. an HTTP/HLS VOD at real time
        self.pace = self.is_file if pace is None else bool(pace)
        self.view = InputView(**spec["view"])
        # the picture kept for thumbnails (and detectors at frame_width 0): the model's own
        # input when that is the whole frame, else the frame squeezed to DISPLAY_SIZE
        self.size = self.view.size if self.view.mode == "resize" else DISPLAY_SIZE
        self.scrub_pairs = [tuple(p) for p in spec.get("scrub", [])]
        self.sampler = Sampler(float(spec["sample_interval"]))
        det = spec.get("detectors") or {}
        self.det_enabled = bool(det.get("enabled"))
        self.det_width = int(det.get("frame_width", 0))
        det_interval = float(det.get("interval") or 0)
        self.det_sampler = Sampler(det_interval) if self.det_enabled and det_interval > 0 else None
        self.frame_det = None
        self.timing_det = None
        self._det_settings = None
        if self.det_enabled:
            try:
                from .detectors import DetectorSettings, FrameDetectors
                self._det_settings = DetectorSettings(**(det.get("settings") or {}))
                self.frame_det = FrameDetectors(self._det_settings)
            except Exception as e:  # detectors are optional: score anyway
                self.det_enabled = False
                self._note(f"detectors disabled: {_describe(e)}")
        self.pacer = Pacer()
        rc = spec.get("reconnect") or {}
        self.backoff = Backoff(rc.get("initial_delay", 1.0), rc.get("max_delay", 30.0),
                               rc.get("multiplier", 2.0), rc.get("jitter", 0.3))
        self.decoded = 0
        self.decode_errors = 0
        self.seq = 0
        self.t_offset = 0.0     # added to pts so a looped file's clock keeps going forward
        self.last_t: float | None = None
        self.frame_step = 0.04
        self._last_tick = 0.0
        self._last_packet = time.monotonic()
        self._decoder_noted = False
        # why NVDEC failed mid-stream: software from then on (the supervisor passes it to a
        # respawned worker process too)
        self._nvdec_failed: str | None = spec.get("nvdec_failed")

    # -- messages ---------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for clear, red in self.scrub_pairs:
            text = text.replace(clear, red)
        return text

    def _note(self, text: str, level: str = "warning") -> None:
        self.chan.send({"t": "note", "text": self.scrub(text), "level": level})

    def state(self, state: str, **kw: Any) -> None:
        if "error" in kw and kw["error"] is not None:
            kw["error"] = self.scrub(kw["error"])
        self.chan.send({"t": "state", "state": state, **kw})

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_tick >= TICK_EVERY:
            self._last_tick = now
            msg: dict[str, Any] = {"t": "tick", "decoded": self.decoded, "decode_errors": self.decode_errors}
            if self.timing_det is not None:
                msg["timing"] = self.timing_det.values(time.time())
            self.chan.send(msg)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, TICK_EVERY))
            self.tick()

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        attempt = 0
        silent_reopen = False
        while True:
            if not silent_reopen:
                self.state("connecting", attempt=attempt)
                attempt += 1
            silent_reopen = False
            t_open = time.monotonic()
            try:
                container = self.open()
            except Exception as e:
                waited = time.monotonic() - t_open
                why = _describe(e)
                # FFmpeg says "Input/output error" for a name that does not resolve: ask the resolver
                unresolved = None if self.is_file else unresolved_host(
                    self.spec.get("host"), timeout=min(5.0, float(self.spec["open_timeout"])))
                if unresolved:
                    why = f"{unresolved} ({why})"
                elif not self.is_file and waited >= 0.9 * float(self.spec["open_timeout"]):
                    why = f"timed out after {waited:.1f} s ({why})"
                if self.fail(f"cannot open: {why}", connected_for=0.0):
                    return EXIT_FAILED
                continue
            opened = time.monotonic()
            decoded_before = self.decoded
            try:
                self.decode(container)
                result, err = "eof", None
            except DecoderUnavailable as e:  # decoder: nvdec where NVDEC cannot run: final
                result, err = "fatal", str(e)
            except Exception as e:
                why = _describe(e)
                waited = time.monotonic() - self._last_packet
                if not self.is_file and waited >= 0.9 * float(self.spec["read_timeout"]):
                    why = f"no data for {waited:.1f} s ({why})"
                result, err = "error", f"read failed: {why}"
            finally:
                try:
                    container.close()
                except Exception:
                    pass
            up_for = time.monotonic() - opened if self.decoded > decoded_before else 0.0
            if result == "fatal":
                self.tick(force=True)
                self.state("error", error=err, retry_in=None, terminal=True)
                return EXIT_FAILED
            if result == "eof":
                if self.decoded == decoded_before:
                    err = "no decodable video frame in the input"
                elif self.is_file and self.loop:
                    self.t_offset = (self.last_t if self.last_t is not None else 0.0) + self.frame_step
                    self.backoff.reset()
                    silent_reopen = True
                    self.state("looping")
                    continue
                elif self.is_file:
                    self.tick(force=True)
                    self.state("ended")
                    return EXIT_ENDED
                else:
                    err = "end of stream (the source closed the connection)"
            if self.fail(err or "unknown error", connected_for=up_for):
                return EXIT_FAILED

    def fail(self, error: str, connected_for: float) -> bool:
        """Report an error; True when it is final (a non-looping file), else back off."""
        if self.is_file and not self.loop:
            self.tick(force=True)
            self.state("error", error=error, retry_in=None, terminal=True)
            return True
        if connected_for >= 5.0:
            self.backoff.reset()
        delay = self.backoff.next_delay()
        self.state("error", error=error, retry_in=round(delay, 3), terminal=False)
        self.sleep(delay)
        return False

    def open(self):
        import av
        spec = self.spec
        scheme = spec["scheme"]
        opts = protocol_options(scheme, spec["open_timeout"], spec["read_timeout"])
        opts.update(spec.get("options") or {})
        url = spec["path"] if self.is_file else spec["url"]
        return av.open(url, mode="r", options=opts,
                       timeout=(float(spec["open_timeout"]), float(spec["read_timeout"])))

    def decode(self, container) -> None:
        import av
        if not container.streams.video:
            raise ValueError("the input has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        decoder = select_decoder(vs, self.spec.get("decoder", "auto"), failed=self._nvdec_failed)
        if decoder.fallback and not self._decoder_noted:
            self._decoder_noted = True  # once per stream, not at every reconnect
            self._note(f"decoder auto: software decode, NVDEC not used ({decoder.fallback})", level="info")
        if self.spec.get("decode_threads"):
            vs.codec_context.thread_count = int(self.spec["decode_threads"])
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        if fps > 0:
            self.frame_step = 1.0 / fps
        if self.det_enabled:
            from .detectors import TimingDetectors
            if self.timing_det is None or not self.is_file:
                self.timing_det = TimingDetectors(nominal_fps=fps or None, settings=self._det_settings,
                                                  start_time=time.time())
            else:  # this worker reopened the file (a loop): its timestamps start over, no jump
                self.timing_det.restart_pts()
            if not self.is_file and self.frame_det is not None:
                self.frame_det.reset()
        cc = vs.codec_context
        info = {"codec": cc.name, "decoder": decoder.detail, "width": cc.width, "height": cc.height,
                "fps": round(fps, 3), "pix_fmt": cc.format.name if cc.format else None}
        if self._nvdec_failed:
            info["nvdec_failed"] = self._nvdec_failed
        self.state("connected", info=info)
        if not self.is_file:
            self.sampler.reset()
            self.pacer.reset()
            if self.det_sampler:
                self.det_sampler.reset()
        consecutive_errors = 0
        first_t: float | None = None
        self._last_packet = time.monotonic()
        for packet in container.demux(vs):
            self._last_packet = time.monotonic()
            self.tick()
            try:
                frames = decoder.decode(packet)
            except (av.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError) as e:
                self.decode_errors += 1
                if self.timing_det is not None:
                    self.timing_det.on_decode_error(time.time())
                consecutive_errors += 1
                if consecutive_errors > 100:
                    raise RuntimeError(f"too many undecodable packets ({_describe(e)})") from None
                continue
            finally:  # also when the packet failed in software too: reconnects still skip NVDEC
                self._on_switch(decoder, info)
            consecutive_errors = 0
            for frame in frames:
                self.decoded += 1
                wall = time.time()
                pts = frame.time
                if pts is not None and math.isfinite(pts):
                    if first_t is None:
                        first_t = pts
                    t = self.t_offset + (pts - first_t) if self.is_file else pts
                    if self.is_file and self.last_t is not None and t <= self.last_t:
                        # the monitor's clock must advance (sampling, pacing, records): a file
                        # whose timestamps do not counts frames; the timing detectors still see
                        # the media's own pts below, so a splice (pts back) is a pts_jump
                        t = self.last_t + self.frame_step
                else:
                    pts = None
                    t = (self.last_t + self.frame_step) if self.last_t is not None else self.t_offset
                self.last_t = t
                if self.is_file or self.pace:
                    clock = t  # sample on the stream's own clock
                    if self.pace:
                        self.sleep(self.pacer.delay(clock))
                        wall = time.time()
                else:
                    clock = time.monotonic()  # live: sample on arrival
                if self.timing_det is not None:
                    self.timing_det.on_frame(pts, wall)
                    if frame.is_corrupt:  # decoded with errors (concealed), where the decoder says so
                        self.timing_det.on_decode_error(wall)
                take = self.sampler.take(clock)
                if self.det_sampler is not None:
                    det = self.det_sampler.take(clock)
                else:
                    det = take and self.frame_det is not None
                if take or det:
                    self.emit(frame, t, wall, take, det)

    def _on_switch(self, decoder, info: dict) -> None:
        """Once NVDEC failed mid-stream (``auto``): say so, show it, keep software for reconnects."""
        if decoder.switched is None or self._nvdec_failed is not None:
            return
        self._nvdec_failed = decoder.switched  # a reopen would get the same broken NVDEC
        self._decoder_noted = True  # this note says it; reconnects need not repeat it
        self._note(f"decoder auto: software decode from now on ({decoder.switched})", level="info")
        self.state("connected", info={**info, "decoder": decoder.detail, "nvdec_failed": decoder.switched})

    def emit(self, frame, t: float, wall: float, take: bool, det: bool) -> None:
        w, h = frame.width, frame.height
        img = None
        if take or (det and not self.det_width):
            img = frame.reformat(width=self.size, height=self.size, format="rgb24").to_ndarray()
        values = None
        if det and self.frame_det is not None:
            dimg = detector_frame(frame, self.det_width) if self.det_width else img
            try:
                values = self.frame_det.update(dimg, t, wall, source_size=(w, h),
                                               luma_native=luma_plane(frame))
            except Exception as e:
                self.frame_det = None
                self.det_enabled = False
                self._note(f"detectors disabled after an error: {_describe(e)}")
        if take:
            self.seq += 1
            # the whole-frame picture is the model's input for resize views: sent without a copy
            payload = (memoryview(img).cast("B") if img.flags.c_contiguous else img.tobytes()) \
                if self.view.mode == "resize" else img.tobytes() + model_input(frame, self.view).tobytes()
            self.chan.send({"t": "frame", "seq": self.seq, "pts": t, "ts": wall, "w": w, "h": h,
                            "size": self.size, "side": self.view.side, "decoded": self.decoded,
                            "detectors": values}, payload)
        elif values is not None:
            self.chan.send({"t": "det", "pts": t, "ts": wall, "detectors": values})


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the supervising thread's process goes away."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def worker_main() -> int:
    """Entry point of ``python -m monitor.source``: spec on stdin, messages on stdout."""
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, never into the protocol
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    _die_with_parent()
    spec = json.loads(sys.stdin.readline())
    sys.stdin.close()
    chan = _Channel(proto_fd)
    chan.send({"t": "hello", "pid": os.getpid()})
    try:
        return _Worker(spec, chan).run()
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


# -------------------------------------------------------------------------------------------
# the supervisor side (in the monitor process)
# -------------------------------------------------------------------------------------------


@dataclass
class FrameMessage:
    """A sampled frame received from a worker."""

    stream: str
    seq: int
    pts: float
    ts: float             # wall-clock time the frame was decoded (epoch seconds)
    width: int            # original frame size (for the region map)
    height: int
    image: Any            # np.ndarray (size, size, 3) uint8: the whole frame, for thumbnails
    detectors: dict[str, float] | None = None
    received: float = field(default_factory=time.monotonic)
    model_image: Any = None  # the model's input view (engines.views); None: ``image`` is it

    @property
    def model_frame(self) -> Any:
        """What the engine scores: the model's input view."""
        return self.image if self.model_image is None else self.model_image


class StreamListener:
    """What a StreamWorker reports; the monitor service implements these."""

    def on_state(self, stream: str, state: str, up: bool, detail: dict) -> None: ...
    def on_frame(self, msg: FrameMessage) -> None: ...
    def on_decoded(self, stream: str, count: int, wall_time: float) -> None: ...
    def on_detectors(self, stream: str, values: dict[str, float], pts: float | None, ts: float) -> None: ...
    def on_timing(self, stream: str, values: dict[str, float]) -> None: ...
    def on_decode_errors(self, stream: str, count: int) -> None: ...
    def on_reconnect(self, stream: str) -> None: ...


DOWN_STATES = {"starting", "connecting", "error", "stale", "ended", "failed", "stopped", "hung"}


class StreamWorker:
    """Runs and supervises the worker process of one stream (a thread in the monitor)."""

    def __init__(self, cfg: StreamConfig, view: InputView, listener: StreamListener,
                 scrubber=None, python: str | None = None, stream: StreamState | None = None):
        from .config import Scrubber
        from .stream_state import StreamState
        self.cfg = cfg
        self.name = cfg.name
        self.view = view
        self.listener = listener
        self.scrub = scrubber or Scrubber([cfg.url])
        self.python = python or sys.executable
        self.stream = stream or StreamState(cfg)  # state, error, info, decoded, fps, reconnects: written here
        self.terminal = False
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name=f"stream-{cfg.name}", daemon=True)
        self._connect_attempts = 0
        self._decode_errors_seen = 0
        self._last_msg = time.monotonic()
        self._last_progress = time.monotonic()
        self._fps_mark: tuple[float, int] | None = None
        self._respawn = Backoff(cfg.reconnect.initial_delay, cfg.reconnect.max_delay,
                                cfg.reconnect.multiplier, cfg.reconnect.jitter)

    # -- public -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def up(self) -> bool:
        return self.stream.state == "up"

    def stop(self) -> None:
        """Ask the worker to stop (non-blocking): SIGTERM now, SIGKILL from ``join``."""
        self._stop.set()
        with self._lock:
            p = self._proc
        if p is not None and p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass

    def join(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            p = self._proc
        if p is not None:
            try:
                p.wait(max(0.0, deadline - time.monotonic() - 0.2))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
        self._thread.join(max(0.05, deadline - time.monotonic()))

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- spec -------------------------------------------------------------------------------
    def spec(self) -> dict:
        from .config import ffmpeg_url, url_host
        c = self.cfg
        det = c.detectors
        det_interval = (1.0 / det.rate) if det.rate > 0 else 0.0
        return {
            # the URL as FFmpeg must get it (credentials percent-encoded): what av.open is given
            "name": c.name, "url": ffmpeg_url(c.url), "path": c.path, "scheme": c.scheme, "is_file": c.is_file,
            "host": None if c.is_file else url_host(c.url),
            "loop": c.loop, "pace": c.pace, "view": self.view.to_meta(), "sample_interval": c.sample_interval,
            "open_timeout": c.timeouts.open, "read_timeout": c.timeouts.read,
            "options": dict(c.options), "decode_threads": c.decode_threads, "decoder": c.decoder,
            "nvdec_failed": self.stream.info.get("nvdec_failed"),
            "reconnect": c.reconnect.model_dump(),
            "detectors": {"enabled": det.enabled, "frame_width": det.frame_width, "interval": det_interval,
                          "settings": det.settings.model_dump()},
            "scrub": list(getattr(self.scrub, "_pairs", [])) + [(s, "***") for s in getattr(self.scrub, "_secrets", [])],
        }

    # -- supervision ------------------------------------------------------------------------
    def _set_state(self, state: str, **detail: Any) -> None:
        if "error" in detail and detail["error"]:
            detail["error"] = self.scrub(detail["error"])
            self.stream.error = detail["error"]
        changed = state != self.stream.state
        self.stream.state = state
        if state == "up":
            self.stream.error = None
        if changed or detail.get("error"):
            try:
                self.listener.on_state(self.name, state, state == "up", detail)
            except Exception:
                log.exception("stream %s: state listener failed", self.name)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # the worker does not need jemalloc, torch thread pools or the parent's preload
        env.pop("LD_PRELOAD", None)
        p = subprocess.Popen([self.python, "-m", "monitor.source"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True,
                             start_new_session=True)
        assert p.stdin is not None
        p.stdin.write((json.dumps(self.spec()) + "\n").encode())
        p.stdin.close()
        threading.Thread(target=self._pump_stderr, args=(p,), name=f"stderr-{self.name}", daemon=True).start()
        return p

    def _pump_stderr(self, p: subprocess.Popen) -> None:
        assert p.stderr is not None
        for raw in iter(p.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                log.warning("stream %s worker: %s", self.name, self.scrub(line))

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                p = self._spawn()
            except Exception as e:
                self._set_state("error", error=f"cannot start worker process: {e}")
                self._stop.wait(self._respawn.next_delay())
                continue
            with self._lock:
                self._proc = p
            if self._stop.is_set():
                p.terminate()
            rc, why = self._read(p)
            if self._stop.is_set():
                break
            if rc == EXIT_ENDED and why is None:
                self.terminal = True
                self._set_state("ended")
                return
            if rc == EXIT_FAILED and why is None:
                self.terminal = True
                if self.stream.state != "failed":
                    self._set_state("failed", error=self.stream.error or "failed")
                return
            err = why or f"worker process exited unexpectedly (code {rc})"
            delay = self._respawn.next_delay()
            self._set_state("error", error=err, retry_in=round(delay, 3))
            if self._stop.wait(delay):
                break
        self._set_state("stopped")

    def _kill(self, p: subprocess.Popen) -> None:
        try:
            p.kill()
        except OSError:
            pass
        try:
            p.wait(2.0)
        except subprocess.TimeoutExpired:
            pass

    def _read(self, p: subprocess.Popen) -> tuple[int | None, str | None]:
        """Pump one worker's messages until it exits; returns (exit code, forced reason)."""
        assert p.stdout is not None
        fd = p.stdout.fileno()
        buf = bytearray()
        now = time.monotonic()
        self._last_msg = now
        self._last_progress = now
        tcfg = self.cfg.timeouts
        eof = False
        while not eof:
            if self._stop.is_set():
                return None, None
            try:
                ready, _, _ = select.select([fd], [], [], 0.25)
            except (OSError, ValueError):
                break
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    eof = True
                else:
                    buf += chunk
                    self._last_msg = time.monotonic()
                    self._parse(buf)
            now = time.monotonic()
            if not eof:
                silent = now - self._last_msg
                if silent > tcfg.hang:
                    self._kill(p)
                    return p.returncode, f"worker unresponsive for {silent:.0f} s (hung open or read): killed"
                if self.stream.state == "up" and now - self._last_progress > tcfg.stale:
                    self._set_state("stale", error=f"no frame decoded for {now - self._last_progress:.1f} s")
        try:
            rc = p.wait(5.0)
        except subprocess.TimeoutExpired:
            self._kill(p)
            rc = p.returncode
        return rc, None

    def _parse(self, buf: bytearray) -> None:
        while len(buf) >= _HDR.size:
            hlen, plen = _HDR.unpack_from(buf, 0)
            total = _HDR.size + hlen + plen
            if len(buf) < total:
                return
            header = json.loads(bytes(buf[_HDR.size:_HDR.size + hlen]))
            payload = bytearray(buf[_HDR.size + hlen:total]) if plen else None
            del buf[:total]
            try:
                self._handle(header, payload)
            except Exception:
                log.exception("stream %s: cannot handle worker message %s", self.name, header.get("t"))

    def _progress(self, decoded: int) -> None:
        now = time.monotonic()
        if decoded > self.stream.decoded:
            delta = decoded - self.stream.decoded
            self.stream.decoded = decoded
            self._last_progress = now
            self.listener.on_decoded(self.name, delta, time.time())
            if self.stream.state == "stale":
                self._set_state("up")
        elif decoded < self.stream.decoded:  # a new worker process counts from zero
            self.stream.decoded = decoded
        mark = self._fps_mark
        if mark is None or decoded < mark[1]:
            self._fps_mark = (now, decoded)
        elif now - mark[0] >= 2.0:
            self.stream.fps = (decoded - mark[1]) / (now - mark[0])
            self._fps_mark = (now, decoded)
        if now - self._last_progress > 2 * self.cfg.timeouts.stale:
            self.stream.fps = 0.0

    def _handle(self, h: dict, payload: bytearray | None) -> None:
        t = h.get("t")
        if t == "tick":
            self._progress(int(h.get("decoded", 0)))
            errs = int(h.get("decode_errors", 0))
            if errs > getattr(self, "_decode_errors_seen", 0):
                self.listener.on_decode_errors(self.name, errs - self._decode_errors_seen)
            self._decode_errors_seen = errs
            if h.get("timing"):
                self.listener.on_timing(self.name, h["timing"])
        elif t == "frame":
            import numpy as np
            self._progress(int(h.get("decoded", 0)))
            size, side = int(h["size"]), int(h["side"])
            pixels = np.frombuffer(payload, dtype=np.uint8)
            img = pixels[:size * size * 3].reshape(size, size, 3)
            view = pixels[size * size * 3:].reshape(side, side, 3) if pixels.size > img.size else None
            if self.stream.state != "up":
                self._set_state("up")
            self.listener.on_frame(FrameMessage(self.name, int(h["seq"]), float(h["pts"]), float(h["ts"]),
                                                int(h["w"]), int(h["h"]), img, h.get("detectors"),
                                                model_image=view))
        elif t == "det":
            if h.get("detectors"):
                self.listener.on_detectors(self.name, h["detectors"], h.get("pts"), float(h["ts"]))
        elif t == "state":
            self._on_worker_state(h)
        elif t == "note":
            level = logging.INFO if h.get("level") == "info" else logging.WARNING
            log.log(level, "stream %s: %s", self.name, self.scrub(h.get("text", "")))
        elif t == "hello":  # a new worker process: its counters start from zero
            self._decode_errors_seen = 0
            self.stream.decoded = 0
            self._fps_mark = None

    def _on_worker_state(self, h: dict) -> None:
        st = h.get("state")
        if st == "connecting":
            self._connect_attempts += 1
            if self._connect_attempts > 1:
                self.stream.reconnects += 1
                self.listener.on_reconnect(self.name)
            self._set_state("connecting")
        elif st == "connected":
            self.stream.info = h.get("info") or {}
            self._last_progress = time.monotonic()
            self._respawn.reset()
            self._set_state("up")
        elif st == "error":
            retry = h.get("retry_in")
            self._set_state("failed" if h.get("terminal") else "error", error=h.get("error") or "error",
                            retry_in=retry)
        elif st == "ended":
            self._set_state("ended")
        elif st == "looping":
            pass


if __name__ == "__main__":
    sys.exit(worker_main())
