"""Which decoder a stream's video goes through: NVDEC (FFmpeg's cuvid decoders) or software.

The per-stream ``decoder`` setting: ``auto`` tries the NVDEC decoder of the stream's codec and
falls back to FFmpeg's software decoder, saying why; ``nvdec`` fails the stream instead of
falling back; ``software`` never tries. Trying is cheap where there is no GPU: FFmpeg fails
to load ``libnvcuvid`` at once. NVDEC frames come back to system memory (NV12) and take the
same swscale path as software-decoded ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("auto", "software", "nvdec")
# FFmpeg codec name -> its NVDEC decoder (FFmpeg builds them only with --enable-cuvid)
CUVID_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "av1": "av1_cuvid",
                  "vp9": "vp9_cuvid", "vp8": "vp8_cuvid", "mpeg1video": "mpeg1_cuvid",
                  "mpeg2video": "mpeg2_cuvid", "mpeg4": "mpeg4_cuvid", "vc1": "vc1_cuvid",
                  "mjpeg": "mjpeg_cuvid"}


class DecoderUnavailable(RuntimeError):
    """``decoder: nvdec`` was asked for and cannot run here; the message says why."""


@dataclass
class Decoder:
    name: str                     # FFmpeg decoder, e.g. "h264_cuvid" or "h264"
    hardware: bool
    detail: str                   # shown in the stream's state: "h264 (software; ...)"
    fallback: str | None = None   # why ``auto`` did not get NVDEC
    context: Any = None           # a codec context opened here; None = the stream's own

    def decode(self, packet) -> list:
        return self.context.decode(packet) if self.context is not None else packet.decode()


def open_context(name: str, stream) -> Any:
    """Open FFmpeg decoder ``name`` for ``stream``'s packets.

    Errors carry FFmpeg's own log lines ("Cannot load libnvcuvid.so.1"), which PyAV's
    exception text only partly holds; they are captured, not printed.
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
                error = e
    finally:
        av.logging.set_level(previous)
    lines = [msg.strip() for _level, _name, msg in logs if msg.strip()]
    cause = getattr(error, "strerror", None) or str(error) or type(error).__name__
    raise RuntimeError("; ".join(lines + [cause]))


def select_decoder(stream, mode: str = "auto") -> Decoder:
    """The decoder for ``stream`` under ``mode`` (see the module doc)."""
    import av

    if mode not in MODES:
        raise ValueError(f"decoder must be one of {', '.join(MODES)}, not {mode!r}")
    codec = stream.codec_context.name
    software = Decoder(codec, False, f"{codec} (software)")
    if mode == "software":
        return software
    hw = CUVID_DECODERS.get(codec)
    if hw is None:
        why = f"no NVDEC decoder for codec {codec}"
    elif hw not in av.codecs_available:
        why = f"{hw} is not in this FFmpeg build"
    else:
        try:
            return Decoder(hw, True, f"{hw} (NVDEC)", context=open_context(hw, stream))
        except RuntimeError as e:
            why = f"{hw} unavailable: {e}"
    if mode == "nvdec":
        raise DecoderUnavailable(f"decoder nvdec: {why} (decoder: auto falls back to software)")
    software.detail = f"{codec} (software; {why})"
    software.fallback = why
    return software
