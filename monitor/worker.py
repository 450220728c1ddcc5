"""The worker process of one stream (``python -m monitor.worker``; supervised by
:class:`monitor.source.StreamWorker`).

It reads its :class:`~monitor.worker_protocol.WorkerSpec` from stdin, opens the source,
decodes the video stream, picks frames ``1/sample_rate`` seconds apart, resizes them in
swscale to the model's ``SxS`` RGB input (``frame.reformat``) and sends them to the
supervisor over its stdout pipe, so only small frames cross processes. It runs the picture
detectors (``monitor.detectors``) on its own, larger frame that never leaves the process,
reconnects with exponential backoff and jitter, paces files at real time and loops them on
request.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any

from engines.views import InputView

from .credentials import Scrubber, ffmpeg_url, url_host
from .decode_mode import DecodeMode
from .decoder import DecoderUnavailable, select_decoder
from .media import detect_picture, model_input
from .netdiag import unresolved_host
from .real_time import RealTime
from .sampler import Backoff, Sampler
from .worker_protocol import EXIT_ENDED, EXIT_FAILED, TICK_EVERY, Channel, WorkerSpec
from .worker_setup import die_with_parent, lower_priority, protocol_options

DISPLAY_SIZE = 384  # side of the whole-frame picture a worker sends with each sample


def _describe(exc: BaseException) -> str:
    """A short, stable description of a PyAV/OS error (without the URL PyAV appends)."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return f"{type(exc).__name__}: {strerror}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


class _Worker:
    def __init__(self, spec: WorkerSpec, chan: Channel):
        cfg = self.cfg = spec.stream
        self.chan = chan
        self.name = cfg.name
        self.is_file = cfg.is_file
        self.loop = cfg.loop
        # files: real time unless told otherwise; network sources are live (their sender paces
        # them) unless ``pace: true`` asks to pace e.g. an HTTP/HLS VOD at real time
        self.pace = self.is_file if cfg.pace is None else cfg.pace
        self.view = InputView(**spec.view)
        # the picture kept for thumbnails (and detectors at frame_width 0): the model's own
        # input when that is the whole frame, else the frame squeezed to DISPLAY_SIZE
        self.size = self.view.size if self.view.mode == "resize" else DISPLAY_SIZE
        self.scrub = Scrubber.from_replacements(spec.replacements)
        self.sampler = Sampler(cfg.sample_interval)
        self.mode = DecodeMode(cfg.decode, cfg.sample_interval)
        # back to all frames mid-GOP: errors until the next key frame (or clean picture) are ours
        self._settling = False
        self._first_packet_t: float | None = None
        self._last_packet_t: float | None = None  # a file's last packet on the monitor's clock
        self._codec_context = None
        det = cfg.detectors
        self.det_enabled = det.enabled
        self.det_width = det.frame_width
        self.det_sampler = Sampler(1.0 / det.rate) if self.det_enabled and det.rate > 0 else None
        self.frame_det = None
        self.timing_det = None
        if self.det_enabled:
            try:
                from .detectors import FrameDetectors
                self.frame_det = FrameDetectors(det.settings)
            except Exception as e:  # detectors are optional: score anyway
                self.det_enabled = False
                self._note(f"detectors disabled: {_describe(e)}")
        self.clock = RealTime(paced=self.pace, live=not self.is_file)
        self.backoff = Backoff(**cfg.reconnect.model_dump())
        self.decoded = 0
        self.packets = 0        # video packets read: the stream's progress when key frames only
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
        self._nvdec_failed: str | None = spec.nvdec_failed

    # -- messages ---------------------------------------------------------------------------
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
            msg: dict[str, Any] = {"t": "tick", "decoded": self.decoded, "packets": self.packets,
                                   "decode_errors": self.decode_errors, "shed": self.clock.shed}
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
                    url_host(self.cfg.url), timeout=min(5.0, self.cfg.timeouts.open))
                if unresolved:
                    why = f"{unresolved} ({why})"
                elif not self.is_file and waited >= 0.9 * self.cfg.timeouts.open:
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
                if not self.is_file and waited >= 0.9 * self.cfg.timeouts.read:
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
                    # the file's end: its last packet, later than its last decoded frame when
                    # only key frames were decoded
                    end = max(t for t in (self.last_t, self._last_packet_t, 0.0) if t is not None)
                    self.t_offset = end + self.frame_step
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
        cfg, timeouts = self.cfg, self.cfg.timeouts
        opts = protocol_options(cfg.scheme, timeouts.open, timeouts.read)
        opts.update(cfg.options)
        # the URL as FFmpeg must get it (credentials percent-encoded)
        url = cfg.path if self.is_file else ffmpeg_url(cfg.url)
        return av.open(url, mode="r", options=opts, timeout=(timeouts.open, timeouts.read))

    def decode(self, container) -> None:
        import av
        if not container.streams.video:
            raise ValueError("the input has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        decoder = select_decoder(vs, self.cfg.decoder, failed=self._nvdec_failed)
        if decoder.fallback and not self._decoder_noted:
            self._decoder_noted = True  # once per stream, not at every reconnect
            self._note(f"decoder auto: software decode, NVDEC not used ({decoder.fallback})", level="info")
        if self.cfg.decode_threads:
            vs.codec_context.thread_count = self.cfg.decode_threads
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        if fps > 0:
            self.frame_step = 1.0 / fps
        self.mode.tolerance = 1.5 * self.frame_step
        if not self.is_file:  # a reconnect's timestamps start anywhere: measure the GOP again
            self.mode.restart()
        if self.det_enabled:
            from .detectors import TimingDetectors
            if self.timing_det is None or not self.is_file:
                self.timing_det = TimingDetectors(nominal_fps=fps or None, settings=self.cfg.detectors.settings,
                                                  start_time=time.time())
            else:  # this worker reopened the file (a loop): its timestamps start over, no jump
                self.timing_det.restart_pts()
            if not self.is_file and self.frame_det is not None:
                self.frame_det.reset()
        cc = self._codec_context = vs.codec_context
        self._settling = False
        self._apply_mode(decoder)
        info = {"codec": cc.name, "decoder": decoder.detail, "width": cc.width, "height": cc.height,
                "fps": round(fps, 3), "pix_fmt": cc.format.name if cc.format else None,
                "decode": self.mode.info()}
        if self._nvdec_failed:
            info["nvdec_failed"] = self._nvdec_failed
        self.state("connected", info=info)
        if not self.is_file:
            self.sampler.reset()
            self.clock.reset()
            if self.det_sampler:
                self.det_sampler.reset()
        consecutive_errors = 0
        first_t: float | None = None
        self._first_packet_t = None
        self._last_packet = time.monotonic()
        for packet in container.demux(vs):
            self._last_packet = time.monotonic()
            self.packets += 1
            self.tick()
            if not self._on_packet(packet, decoder, info):
                continue
            try:
                frames = decoder.decode(packet)
                if self.mode.keyframes_only and packet.is_keyframe:
                    frames = [*frames, *self._drain(decoder, packet)]
            except (av.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError) as e:
                self.decode_errors += 1
                if self.timing_det is not None and not self._settling:
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
                    if self.pace and not self.mode.keyframes_only:  # else paced per packet
                        self.sleep(self.clock.pacer.delay(clock))
                        wall = time.time()
                else:
                    clock = time.monotonic()  # live: sample on arrival
                if self.timing_det is not None:
                    if not self.mode.keyframes_only:  # else fed per packet
                        self.timing_det.on_frame(pts, wall)
                    if frame.is_corrupt and not self._settling:  # decoded with errors (concealed)
                        self.timing_det.on_decode_error(wall)
                if not frame.is_corrupt:  # a clean picture again (a stream without key frames)
                    self._settling = False
                take = self.sampler.take(clock)
                if self.det_sampler is not None:
                    det = self.det_sampler.take(clock)
                else:
                    det = take and self.frame_det is not None
                if take or det:
                    self.emit(frame, t, wall, take, det)

    def _on_packet(self, packet, decoder, info: dict) -> bool:
        """Per video packet: the key-frame decision, and, while only key frames are decoded,
        pacing, the timing detectors (which need every frame's time, not only the decoded) and
        shedding key frames while behind real time; with all frames, catching up
        (:class:`CatchUp`). False: do not decode this packet."""
        if self.mode.setting == "all" and not self.clock.keeps_time:
            return True
        media_t = None
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is not None and packet.time_base is not None:
            media_t = float(stamp * packet.time_base)
        t = media_t
        if media_t is not None and self.is_file:  # the monitor's clock: on across loops
            if self._first_packet_t is None:
                self._first_packet_t = media_t
            t = self._last_packet_t = self.t_offset + (media_t - self._first_packet_t)
        if packet.is_keyframe:
            self._settling = False
        changed = self.mode.on_packet(t, packet.is_keyframe)
        if changed:
            self._apply_mode(decoder, switching=True)
            self._note(changed, level="info")
            info["decode"] = self.mode.info()
            self.state("connected", info=info)
        if t is None:
            return True
        if not self.mode.keyframes_only:
            return not self.clock.keeps_time or self._keep_up(packet, decoder, media_t, t)
        self._per_packet(media_t, t)
        # skipping a key frame costs nothing to the next one (each decodes on its own) and saves
        # its decode and detectors
        return not packet.is_keyframe or not self.clock.keeps_time or not self.clock.skip_key(t)

    def _per_packet(self, media_t: float | None, t: float) -> None:
        """What frames that are not decoded still owe: pacing and the timing detectors."""
        if self.pace:
            self.sleep(self.clock.pacer.delay(t))
        if self.timing_det is not None:
            self.timing_det.on_frame(media_t, time.time())

    def _keep_up(self, packet, decoder, media_t: float | None, t: float) -> bool:
        """All frames: decode unless behind real time (``CatchUp``); the samples due while it
        skips are counted as shed."""
        decode, fell_behind = self.clock.keep_all(t, packet.is_keyframe)
        if decode:
            return True
        if fell_behind:  # the frames the decoder holds are late too
            self._context(decoder).flush_buffers()
        self._per_packet(media_t, t)
        if self.sampler.take(t if self.is_file or self.pace else time.monotonic()):
            self.clock.shed += 1
        return False

    def _context(self, decoder):
        """The codec context that decodes: the decoder's own (NVDEC), else the stream's."""
        return decoder.context if decoder.context is not None else self._codec_context

    def _drain(self, decoder, packet) -> list:
        """The key frame just sent, now: a decoder that reorders (B-frames) holds its output
        until more frames follow, which are the next key frames, seconds later, when it skips
        the rest. Each key frame decodes on its own, so the decoder is drained and reset."""
        ctx = self._context(decoder)
        frames = ctx.decode(None)
        ctx.flush_buffers()
        for frame in frames:
            if frame.time_base is None:  # frames drained by a flush carry no time base
                frame.time_base = packet.time_base
        return frames

    def _apply_mode(self, decoder, switching: bool = False) -> None:
        keys = self.mode.keyframes_only
        self._context(decoder).skip_frame = "NONKEY" if keys else "DEFAULT"
        # a key frame a little early still counts as the sample that is due (GOP jitter)
        for sampler in (self.sampler, self.det_sampler):
            if sampler is not None:
                sampler.slack = 0.25 * sampler.interval if keys else 0.0
        if switching and not keys:
            # frames before the next key frame reference frames that were skipped: their
            # errors are the switch's, not the stream's
            self._settling = True

    def _on_switch(self, decoder, info: dict) -> None:
        """Once NVDEC failed mid-stream (``auto``): say so, show it, keep software for reconnects."""
        if decoder.switched is None or self._nvdec_failed is not None:
            return
        self._nvdec_failed = decoder.switched  # a reopen would get the same broken NVDEC
        self._apply_mode(decoder)  # the software decoder skips what NVDEC skipped
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
            try:
                values = detect_picture(self.frame_det, frame, t, wall, self.det_width, img)
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
                            "packets": self.packets, "detectors": values}, payload)
        elif values is not None:
            self.chan.send({"t": "det", "pts": t, "ts": wall, "detectors": values})


def worker_main() -> int:
    """Entry point of ``python -m monitor.worker``: spec on stdin, messages on stdout."""
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, never into the protocol
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    die_with_parent()
    spec = WorkerSpec.from_line(sys.stdin.readline())
    sys.stdin.close()
    lower_priority(spec.stream.nice)
    chan = Channel(proto_fd)
    chan.send({"t": "hello", "pid": os.getpid()})
    try:
        return _Worker(spec, chan).run()
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


if __name__ == "__main__":
    sys.exit(worker_main())
