"""Stream workers: one PyAV decoding process per stream (:mod:`monitor.worker`), supervised
from the monitor by a :class:`StreamWorker` thread.

Why a process: ``av.open`` and reads can block inside FFmpeg (a camera that accepts the TCP
connection and then sends nothing, a half-open socket). PyAV's interrupt timeouts and the
protocols' socket timeouts (``timeout``/``rw_timeout``) catch most of that; the process is
the backstop: the supervisor kills it when it shows no sign of life for ``timeouts.hang``
seconds and starts a new one. A worker that crashes, segfaults or leaks takes only its own
stream down. What crosses between the two: :mod:`monitor.worker_protocol`.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engines.views import InputView

from .credentials import Scrubber
from .sampler import Backoff
from .stream_config import StreamConfig
from .stream_state import StreamState
from .worker_protocol import EXIT_ENDED, EXIT_FAILED, WorkerSpec, read_messages

log = logging.getLogger(__name__)


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
    def on_shed(self, stream: str, count: int) -> None: ...
    def on_reconnect(self, stream: str) -> None: ...


class StreamWorker:
    """Runs and supervises the worker process of one stream (a thread in the monitor)."""

    def __init__(self, cfg: StreamConfig, view: InputView, listener: StreamListener,
                 scrubber: Scrubber | None = None, python: str | None = None,
                 stream: StreamState | None = None):
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
        self._fps_mark: tuple[float, int, bool] | None = None  # (when, count, counting packets)
        self._packets_seen = 0
        self._shed_seen = 0
        self._respawn = Backoff(**cfg.reconnect.model_dump())

    # -- public -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

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

    @property
    def pid(self) -> int | None:
        """The running worker process's pid (for memory figures), None between processes."""
        with self._lock:
            p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    # -- spec -------------------------------------------------------------------------------
    def spec(self) -> WorkerSpec:
        """What a new worker process is told: the stream's settings, typed."""
        return WorkerSpec(stream=self.cfg, view=self.view.to_meta(), replacements=self.scrub.replacements(),
                          nvdec_failed=self.stream.info.get("nvdec_failed"))

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
        p = subprocess.Popen([self.python, "-m", "monitor.worker"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True,
                             start_new_session=True)
        assert p.stdin is not None
        p.stdin.write(self.spec().to_line())
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
                    what = "no video received" if self._keyframes_only else "no frame decoded"
                    self._set_state("stale", error=f"{what} for {now - self._last_progress:.1f} s")
        try:
            rc = p.wait(5.0)
        except subprocess.TimeoutExpired:
            self._kill(p)
            rc = p.returncode
        return rc, None

    def _parse(self, buf: bytearray) -> None:
        for header, payload in read_messages(buf):
            try:
                self._handle(header, payload)
            except Exception:
                log.exception("stream %s: cannot handle worker message %s", self.name, header.get("t"))

    @property
    def _keyframes_only(self) -> bool:
        return (self.stream.info.get("decode") or {}).get("mode") == "keyframes"

    def _progress(self, decoded: int, packets: int | None = None) -> None:
        """Frames decoded so far by this worker process; ``packets``: video packets read.

        While only key frames are decoded, the stream's progress and frame rate are its packets:
        a key frame every few seconds is not a stall."""
        now = time.monotonic()
        if packets is not None and self._keyframes_only:
            if packets > self._packets_seen:
                self._last_progress = now
                if self.stream.state == "stale":
                    self._set_state("up")
            self._packets_seen = packets
            decoded_for_rate = packets
        else:
            decoded_for_rate = decoded
        if decoded > self.stream.decoded:
            delta = decoded - self.stream.decoded
            self.stream.decoded = decoded
            self._last_progress = now
            self.listener.on_decoded(self.name, delta, time.time())
            if self.stream.state == "stale":
                self._set_state("up")
        elif decoded < self.stream.decoded:  # a new worker process counts from zero
            self.stream.decoded = decoded
        mark, kind = self._fps_mark, packets is not None and self._keyframes_only
        if mark is None or decoded_for_rate < mark[1] or mark[2] != kind:
            self._fps_mark = (now, decoded_for_rate, kind)
        elif now - mark[0] >= 2.0:
            self.stream.fps = (decoded_for_rate - mark[1]) / (now - mark[0])
            self._fps_mark = (now, decoded_for_rate, kind)
        if now - self._last_progress > 2 * self.cfg.timeouts.stale:
            self.stream.fps = 0.0

    def _handle(self, h: dict, payload: bytearray | None) -> None:
        t = h.get("t")
        if t == "tick":
            self._progress(int(h.get("decoded", 0)), int(h.get("packets", 0)))
            errs = int(h.get("decode_errors", 0))
            if errs > getattr(self, "_decode_errors_seen", 0):
                self.listener.on_decode_errors(self.name, errs - self._decode_errors_seen)
            self._decode_errors_seen = errs
            shed = int(h.get("shed", 0))
            if shed > self._shed_seen:
                self.listener.on_shed(self.name, shed - self._shed_seen)
            self._shed_seen = shed
            if h.get("timing"):
                self.listener.on_timing(self.name, h["timing"])
        elif t == "frame":
            import numpy as np
            self._progress(int(h.get("decoded", 0)), int(h.get("packets", 0)))
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
            self._packets_seen = 0
            self._shed_seen = 0
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
