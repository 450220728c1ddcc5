"""What a valid configuration needs from this installation: its models and the FFmpeg
protocols of its stream URLs. ``vqmon check-config`` and ``vqmon run`` (before anything starts)
refuse a configuration that asks for what is not here. (The backend is checked when the
configuration is loaded: ``engine.backend`` takes only the names of ``engines.backends``.)
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os

from engines.models import list_models

from .config import Config

# URL schemes FFmpeg opens with a demuxer of that name (plus a protocol under it), not a protocol
_DEMUXER_SCHEMES = {"rtsp": ("rtsp", "tcp"), "rtsps": ("rtsp", "tls"), "sap": ("sap", "udp")}
# what to say about schemes that are often missing
_HINTS = {
    "srt": "SRT needs an FFmpeg built with libsrt (--enable-libsrt); PyAV's wheels are built without it",
    "rist": "RIST needs an FFmpeg built with librist",
    "zmq": "ZeroMQ needs an FFmpeg built with libzmq",
    "hls": "give the playlist's http:// or https:// URL: FFmpeg's HLS demuxer reads it from there",
}


def _libavformat() -> str | None:
    """The libavformat that PyAV loaded (its wheel bundles one), by the process's own maps."""
    import av  # noqa: F401 - loads libavformat

    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libavformat" in line and "/" in line:
                    return line[line.index("/"):].strip()
    except OSError:
        pass
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs", "libavformat*"))
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def input_protocols() -> frozenset[str] | None:
    """The input protocols of PyAV's FFmpeg (``avio_enum_protocols``); None if it cannot be asked."""
    path = _libavformat()
    if path is None:
        return None
    try:
        enum = ctypes.CDLL(path).avio_enum_protocols
    except (OSError, AttributeError):
        return None
    enum.restype, enum.argtypes = ctypes.c_char_p, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    opaque, names = ctypes.c_void_p(None), set()
    while (name := enum(ctypes.byref(opaque), 0)) is not None:  # 0: input protocols
        names.add(name.decode())
    return frozenset(names)


def scheme_problem(scheme: str) -> str | None:
    """Why FFmpeg here cannot open ``scheme://`` URLs; None when it can (or cannot be asked)."""
    import av

    protocols = input_protocols()
    if scheme == "file" or protocols is None:
        return None
    if scheme in _DEMUXER_SCHEMES:
        demuxer, protocol = _DEMUXER_SCHEMES[scheme]
        if demuxer in av.formats_available and protocol in protocols:
            return None
    elif scheme.split("+")[0] in protocols:
        return None
    return _HINTS.get(scheme) or f"this FFmpeg's input protocols are {', '.join(sorted(protocols))}"


def check(cfg: Config) -> list[str]:
    """The problems of ``cfg`` on this installation, one line each (empty: it can run here).

    Enabled streams only: a disabled one is kept in the file but never opened.
    """
    models = list_models()
    problems = [f"streams[{i}] {s.name!r}.model: {s.model!r} is not a model: use one of {', '.join(models)}"
                for i, s in enumerate(cfg.streams) if s.enabled and s.model not in models]
    for i, s in enumerate(cfg.streams):
        why = scheme_problem(s.scheme) if s.enabled else None
        if why:
            problems.append(f"streams[{i}] {s.name!r}.url: {s.scheme}:// cannot be opened here: {why}")
    return problems
