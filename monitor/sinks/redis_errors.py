"""What the Redis sink says about errors: connection errors in words, and writes Redis rejects
(a full Redis under ``maxmemory`` with ``noeviction`` refuses every one) logged at a bounded
rate: the first at once, then one summary every ``every`` seconds while they go on."""
from __future__ import annotations

import logging
import time
import urllib.parse
from collections import Counter

KINDS = ("record", "state", "event")  # what a rejected write was (the metric's ``kind`` label)


def connection_error_text(e: BaseException, password_given: bool) -> str:
    """``e`` (from connecting) as the log and the state show it; never holds the password."""
    import redis

    if isinstance(e, redis.AuthenticationError):
        if not password_given:  # redis-py says "HELLO must be called with the client already authenticated..."
            return ("authentication required: the Redis server wants a password (set redis.password, "
                    "or redis.username too for an ACL user)")
        return f"authentication failed: the Redis server refused the user name or password ({e})"
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"


def password_given(url: str, password: str | None) -> bool:
    """Whether a password reaches Redis: ``password``, in the URL's userinfo or its query."""
    if password:
        return True
    parts = urllib.parse.urlsplit(url)
    return bool(parts.password) or "password" in urllib.parse.parse_qs(parts.query)


class RejectionLog:
    """Writes Redis rejected, logged without flooding: :meth:`rejected` after each write round
    that had rejections, :meth:`accepted` after one that had none."""

    def __init__(self, logger: logging.Logger, every: float = 30.0, clock=time.monotonic, scrub=str):
        self.log, self.every, self.clock, self.scrub = logger, float(every), clock, scrub
        self._since: float | None = None  # when the last line was logged, while rejections go on
        self._pending: Counter = Counter()
        self._last = ""

    @property
    def active(self) -> bool:
        return self._since is not None

    def rejected(self, counts: Counter, error: BaseException | str) -> None:
        now = self.clock()
        self._last = self.scrub(error)
        if self._since is None:
            self._since = now
            self.log.error("redis: write rejected (%s): %s; further rejections are summed up every %g s",
                           _counts(counts), self._last, self.every)
            return
        self._pending.update(counts)
        if now - self._since >= self.every:
            self._summary(now)
            self._since = now

    def accepted(self) -> None:
        if self._since is None:
            return
        if self._pending:
            self._summary(self.clock())
        self.log.warning("redis: writes accepted again")
        self._since = None

    def _summary(self, now: float) -> None:
        self.log.error("redis: %s more write(s) rejected in the last %.0f s (%s); last: %s",
                       sum(self._pending.values()), now - self._since, _counts(self._pending), self._last)
        self._pending = Counter()


def _counts(counts: Counter) -> str:
    return ", ".join(f"{kind} {counts[kind]}" for kind in KINDS if counts[kind])
