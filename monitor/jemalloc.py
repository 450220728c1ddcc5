"""Re-run the CPU process under jemalloc when it is installed.

PyTorch's CPU inference with glibc malloc returns memory to the OS after every forward and
spends ~half its time in the kernel; with jemalloc (decay disabled) Lite0 runs about 2x faster
on the same machine (docs/performance.md). LD_PRELOAD only works at process start, hence the
re-exec. ``VQMON_JEMALLOC=0`` turns it off.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
              "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc() -> str | None:
    return next((p for p in CANDIDATES if Path(p).exists()), None)


def reexec_with_jemalloc(args: list[str]) -> None:
    """Replace this process by ``python ARGS`` under jemalloc, if available and not done yet."""
    if os.environ.get("VQMON_JEMALLOC", "1") == "0" or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = find_jemalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD")]))
    env.setdefault("MALLOC_CONF", MALLOC_CONF)
    os.execve(sys.executable, [sys.executable, *args], env)
