"""Live console status: a rich table per stream, refreshed while the monitor runs.

Only on a terminal (``sys.stdout.isatty()``) and unless ``--no-console``; otherwise the
monitor logs a one-line summary per stream now and then instead.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service import Monitor

log = logging.getLogger(__name__)

_STATE_STYLE = {"up": "green", "stale": "yellow", "connecting": "yellow", "starting": "dim",
                "error": "red", "failed": "bold red", "ended": "dim", "stopped": "dim"}


def console_available(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def build_table(monitor: Monitor):
    from rich.table import Table
    rows = monitor.snapshot()
    info = monitor.header()
    table = Table(title=info, title_justify="left", expand=False)
    for col, kw in (("stream", {"no_wrap": True, "min_width": 10}), ("state", {"no_wrap": True}), ("fps", {"justify": "right"}),
                    ("scored", {"justify": "right"}), ("score", {"justify": "right"}),
                    ("worst", {"justify": "right"}), ("drops", {"justify": "right"}),
                    ("reconn.", {"justify": "right"}), ("alerts", {}), ("last error", {"overflow": "ellipsis", "no_wrap": True})):
        table.add_column(col, **kw)
    for r in rows:
        style = _STATE_STYLE.get(r["state"], "")
        table.add_row(r["stream"], f"[{style}]{r['state']}[/]" if style else r["state"], _fmt(r["fps"]),
                      str(r["scored"]), _fmt(r["score"]), _fmt(r["worst"]), str(r["dropped"]),
                      str(r["reconnects"]), ", ".join(r["alerts"]) or "-",
                      (r["error"] or "")[:80])
    return table


class LiveConsole:
    """Context manager: a rich Live display with log records printed above it."""

    def __init__(self, monitor: Monitor, refresh: float = 1.0):
        self.monitor = monitor
        self.refresh = refresh
        self._live = None
        self._handler = None
        self._saved: list[logging.Handler] = []

    def __enter__(self) -> LiveConsole:
        from rich.console import Console
        from rich.live import Live
        from rich.logging import RichHandler
        console = Console(stderr=False)
        root = logging.getLogger()
        self._saved = list(root.handlers)
        self._handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        level = min((h.level for h in self._saved), default=logging.NOTSET)
        self._handler.setLevel(level)
        for h in self._saved:
            root.removeHandler(h)
        root.addHandler(self._handler)
        self._live = Live(build_table(self.monitor), console=console, refresh_per_second=4,
                          transient=False, redirect_stdout=True, redirect_stderr=True)
        self._live.__enter__()
        return self

    def update(self) -> None:
        if self._live is not None:
            self._live.update(build_table(self.monitor))

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            try:
                self._live.update(build_table(self.monitor))
            finally:
                self._live.__exit__(*exc)
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
        for h in self._saved:
            root.addHandler(h)


class LogSummary:
    """Non-TTY fallback: one log line per stream every ``every`` seconds."""

    def __init__(self, monitor: Monitor, every: float = 30.0):
        self.monitor = monitor
        self.every = every
        self._last = time.monotonic()

    def update(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        for r in self.monitor.snapshot():
            log.info("stream %s: %s fps=%s scored=%d score=%s worst=%s drops=%d reconnects=%d%s",
                     r["stream"], r["state"], _fmt(r["fps"]), r["scored"], _fmt(r["score"]), _fmt(r["worst"]),
                     r["dropped"], r["reconnects"], f" error={r['error']}" if r["error"] else "")

    def __enter__(self) -> LogSummary:
        return self

    def __exit__(self, *exc) -> None:
        pass
