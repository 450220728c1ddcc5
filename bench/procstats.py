"""Memory and CPU time of a process from /proc (Linux), for the pipeline bench (psutil is not a
dependency of vqmon). Every reader returns None when the process is gone or /proc says nothing."""
from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def _field_kb(path: str, key: str) -> int | None:
    """The ``key:   123 kB`` line of a /proc file, in kB."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb(pid: int) -> float | None:
    """Resident set size (VmRSS): shared pages counted in full in every process."""
    kb = _field_kb(f"/proc/{pid}/status", "VmRSS")
    return None if kb is None else kb / 1024


def pss_mb(pid: int) -> float | None:
    """Proportional set size: each shared page split between the processes mapping it, so the
    workers' PSS adds up to what they take together (RSS double-counts the shared libraries)."""
    kb = _field_kb(f"/proc/{pid}/smaps_rollup", "Pss")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of all the process's threads (not of its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name (field 2) may hold spaces and parentheses: split after the last ')'
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / _TICKS  # utime, stime: fields 14 and 15


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than two distinct xs."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
