"""Which decoder a stream's video goes through: NVDEC (FFmpeg's cuvid decoders) or software.

The per-stream ``decoder`` setting: ``auto`` tries the NVDEC decoder of the stream's codec and
falls back to FFmpeg's software decoder, saying why; ``nvdec`` fails the stream instead of
falling back; ``software`` never tries. Trying is cheap where there is no GPU: FFmpeg fails
to load ``libnvcuvid`` at once. NVDEC frames come back to system memory (NV12) and take the
same swscale path as software-decoded ones.

NVDEC can also open and then fail mid-stream (a profile or size the GPU cannot decode, a
driver fault, the GPU's decoder sessions used up). Under ``auto`` the decoder then switches
itself to software for the rest of the stream, and the worker keeps software for that
stream's later reconnects, so it does not reopen a broken NVDEC forever: it switches on the
first FFmpeg error other than "invalid data", or after ``HW_INVALID_LIMIT`` packets in a row
that NVDEC calls invalid (one bad packet is the stream's fault, a run of them is NVDEC's),
and gives the packet that made it switch to the software decoder. ``nvdec`` never switches: its
errors reach the caller as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES = ("auto", "software", "nvdec")
# FFmpeg codec name -> its NVDEC decoder (FFmpeg builds them only with --enable-cuvid)
CUVID_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "av1": "av1_cuvid",
                  "vp9": "vp9_cuvid", "vp8": "vp8_cuvid", "mpeg1video": "mpeg1_cuvid",
                  "mpeg2video": "mpeg2_cuvid", "mpeg4": "mpeg4_cuvid", "vc1": "vc1_cuvid",
                  "mjpeg": "mjpeg_cuvid"}
HW_INVALID_LIMIT = 3  # NVDEC "invalid data" errors in a row that make ``auto`` switch to software


class DecoderUnavailable(RuntimeError):
    """``decoder: nvdec`` was asked for and cannot run here; the message says why."""


@dataclass
class Decoder:
    name: str                     # FFmpeg decoder, e.g. "h264_cuvid" or "h264"
    hardware: bool
    detail: str                   # shown in the stream's state: "h264 (software; ...)"
    fallback: str | None = None   # why ``auto`` did not get NVDEC, or stopped using it
    context: Any = None           # a codec context opened here; None = the stream's own
    software: str | None = None   # ``auto`` on NVDEC: the codec to switch to if NVDEC fails
    switched: str | None = None   # set when it did switch mid-stream: why (= ``fallback``)
    _invalid: int = field(default=0, repr=False)  # NVDEC's "invalid data" errors in a row

    def decode(self, packet) -> list:
        if self.software is None:  # software, or NVDEC under ``nvdec``: errors go to the caller
            return self.context.decode(packet) if self.context is not None else packet.decode()
        import av
        try:
            frames = self.context.decode(packet)
        except av.InvalidDataError as e:  # a corrupt packet fails every decoder: give it a few
            self._invalid += 1
            if self._invalid < HW_INVALID_LIMIT:
                raise
            self._switch(f"{self._invalid} undecodable packets in a row ({type(e).__name__}: {e.strerror})")
        except av.FFmpegError as e:
            self._switch(f"{type(e).__name__}: {e.strerror}")
        else:
            self._invalid = 0
            return frames
        return packet.decode()  # the failed packet again, in software; its errors are the caller's

    def _switch(self, why: str) -> None:
        """Go on in software: the stream's own codec context, as ``software`` mode decodes."""
        self.switched = self.fallback = f"{self.name} failed mid-stream: {why}"
        self.detail = f"{self.software} (software; {self.fallback})"
        self.name, self.hardware, self.context, self.software = self.software, False, None, None


def open_context(name: str, stream) -> Any:
    """Open FFmpeg decoder ``name`` for ``stream``'s packets.

    Errors carry FFmpeg's own log lines ("Cannot load libnvcuvid.so.1"), which PyAV's
    exception text only partly holds; they are captured, not printed.

    The failure is kept as text only: an exception kept past its ``except`` block holds its
    traceback, whose frame holds the exception and ``stream`` (so the stream's container and
    its decoder's frame buffers) in a reference cycle that only a full garbage collection
    frees, i.e. a worker that reopens a looped file under ``auto`` grew by a decoder per
    loop (issue 20, F2).
    """
    import av
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            try:
                ctx = av.CodecContext.create(name, "r")
                ctx.extradata = stream.codec_context.extradata  # SPS/PPS of MP4/MKV streams
                ctx.open()
                return ctx
            except Exception as e:
                cause = getattr(e, "strerror", None) or str(e) or type(e).__name__
    finally:
        av.logging.set_level(previous)
    lines = [msg.strip() for _level, _name, msg in logs if msg.strip()]
    ctx = stream = None  # the raised error's traceback holds this frame: keep nothing big in it
    raise RuntimeError("; ".join(lines + [cause]))


def select_decoder(stream, mode: str = "auto", failed: str | None = None) -> Decoder:
    """The decoder for ``stream`` under ``mode`` (see the module doc).

    ``failed``: why NVDEC failed mid-stream earlier on this stream (a ``Decoder.switched``);
    ``auto`` then goes straight to software instead of opening NVDEC again.
    """
    import av

    if mode not in MODES:
        raise ValueError(f"decoder must be one of {', '.join(MODES)}, not {mode!r}")
    codec = stream.codec_context.name
    software = Decoder(codec, False, f"{codec} (software)")
    if mode == "software":
        return software
    hw = CUVID_DECODERS.get(codec)
    if failed and mode == "auto":
        why = failed
    elif hw is None:
        why = f"no NVDEC decoder for codec {codec}"
    elif hw not in av.codecs_available:
        why = f"{hw} is not in this FFmpeg build"
    else:
        try:
            return Decoder(hw, True, f"{hw} (NVDEC)", context=open_context(hw, stream),
                           software=codec if mode == "auto" else None)
        except RuntimeError as e:
            why = f"{hw} unavailable: {e}"
    if mode == "nvdec":
        raise DecoderUnavailable(f"decoder nvdec: {why} (decoder: auto falls back to software)")
    software.detail = f"{codec} (software; {why})"
    software.fallback = why
    return software
