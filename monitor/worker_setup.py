"""How a stream's worker process (:mod:`monitor.worker`) sets itself up: the FFmpeg options that
bound its I/O, its CPU priority, and its death with its supervisor."""
from __future__ import annotations

import os
import signal


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


def die_with_parent() -> None:
    """Linux: get SIGKILL when the supervising thread's process goes away."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def lower_priority(nice: int) -> None:
    """Run at ``nice`` (0-19) relative to the monitor (the stream's ``nice`` setting).

    A worker has its own session, so where the kernel groups processes by session
    (``/proc/sys/kernel/sched_autogroup_enabled``) its nice value alone would not weigh
    against the scorer: the session group's nice is set too."""
    if nice <= 0:
        return
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:  # no autogroups (kernel option off), or not allowed: the nice value still holds
        pass
