"""URLs and the credentials in them: one grammar for redaction, FFmpeg and stream names.

Credentials are found by the grammar of a URL (a password may hold ``/ # ? @ :``), redacted for
anything shown, percent-encoded as FFmpeg needs them, and scrubbed out of any text
(``Scrubber``). They never leave this module in clear: use ``redact_url`` / ``Scrubber`` for
anything printed, logged, exported as a metric or written to a sink.
"""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# query parameters whose values are secrets (SRT passphrase, tokens in HLS URLs, ...)
_SECRET_QUERY_KEYS = {"password", "passwd", "pass", "passphrase", "pwd", "token", "access_token",
                      "auth", "key", "secret", "sig", "signature", "apikey", "api_key"}


def url_scheme(url: str) -> str:
    m = _SCHEME_RE.match(url)
    if not m:
        return "file"  # a plain path
    scheme = m.group(1).lower()
    return "file" if scheme == "file" else scheme


# where the authority (host[:port]) of a ``scheme://`` URL ends
_AUTHORITY_END_RE = re.compile(r"[/?#]")
# what must follow the '@' that ends the userinfo: a host (a name or IPv4 address, or an
# [IPv6] literal) with an optional port, up to the next '/', '?' or '#'
_HOSTPORT_RE = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]*\]|[A-Za-z0-9._~%-]+)(?::[0-9]*)?")
_PCT_RE = re.compile(r"(%[0-9A-Fa-f]{2})")
# RFC 3986 sub-delims: allowed in userinfo as they are (quote() keeps the unreserved ones)
_USERINFO_SAFE = "!$&'()*+,;="
# FFmpeg protocols that percent-decode the user:password of the URL (libavformat/httpauth.c);
# others (rtmp, ...) take it as written, so vqmon passes their URLs on unchanged
_DECODING_SCHEMES = {"rtsp", "rtsps", "http", "https"}


class _UrlParts(NamedTuple):
    prefix: str            # "scheme://"
    userinfo: str | None   # "user:password" as written; None: no credentials
    hostport: str
    rest: str              # path?query#fragment, as written


def _split_url(url: str) -> _UrlParts | None:
    """A ``scheme://`` URL split by the grammar of credentials, not by ``urlsplit``.

    The userinfo is everything between ``://`` and the *last* ``@`` that is followed by a
    host[:port] (up to the next ``/``, ``?`` or ``#``), so a password may hold any character,
    ``/ # ? @ :`` included; ``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``
    and never sees the ``@`` after them. Without such an ``@`` the last ``@`` still counts
    (doubtful URLs are over-redacted rather than leaked). A colon-less candidate holding
    ``/``, ``?`` or ``#`` is a path or query with an ``@`` (``https://cdn/@user/x.m3u8``), not
    credentials. None for a path or ``file:`` URL.
    """
    m = _SCHEME_RE.match(url)
    if not m or m.group(1).lower() == "file":
        return None
    prefix, after = url[:m.end()], url[m.end():]

    def host_end(start: int) -> int:
        e = _AUTHORITY_END_RE.search(after, start)
        return e.start() if e else len(after)

    at = after.rfind("@")
    while at >= 0 and not _HOSTPORT_RE.fullmatch(after[at + 1:host_end(at + 1)]):
        at = after.rfind("@", 0, at)
    if at < 0:
        at = after.rfind("@")
    if at >= 0:
        userinfo = after[:at]
        if ":" in userinfo or not _AUTHORITY_END_RE.search(userinfo):
            end = host_end(at + 1)
            return _UrlParts(prefix, userinfo, after[at + 1:end], after[end:])
    end = host_end(0)
    return _UrlParts(prefix, None, after[:end], after[end:])


def _password(parts: _UrlParts | None) -> str | None:
    if parts is None or parts.userinfo is None or ":" not in parts.userinfo:
        return None
    return parts.userinfo.split(":", 1)[1]


def _query_items(rest: str) -> tuple[str, str, list[tuple[str, str, str]], str]:
    """(path, "?" or "", [(raw key, "=" or "", raw value)], "#fragment" or "") of what follows the host."""
    path_query, hash_, fragment = rest.partition("#")
    path, qmark, query = path_query.partition("?")
    items = [piece.partition("=") for piece in query.split("&")] if query else []
    return path, qmark, items, hash_ + fragment


def _is_secret_item(key: str, value: str) -> bool:
    return bool(value) and urllib.parse.unquote_plus(key).lower() in _SECRET_QUERY_KEYS


def _pct_encode(text: str) -> str:
    """``text`` with what RFC 3986 userinfo does not allow percent-encoded; ``%XX`` kept."""
    return "".join(part if _PCT_RE.fullmatch(part) else urllib.parse.quote(part, safe=_USERINFO_SAFE)
                   for part in _PCT_RE.split(text))


def _secret_parts(url: str) -> list[str]:
    """Every form in which the URL's secrets may show up: as written, decoded, encoded."""
    parts = _split_url(url)
    if parts is None:
        return []
    found: list[str] = []
    pw = _password(parts)
    if pw:
        clear = urllib.parse.unquote(pw)
        found += [pw, clear, _pct_encode(pw), urllib.parse.quote(pw, safe=""),
                  urllib.parse.quote(clear, safe=""), _pct_encode(clear)]
    for key, _, value in _query_items(parts.rest)[2]:
        if _is_secret_item(key, value):
            clear = urllib.parse.unquote_plus(value)
            found += [value, clear, urllib.parse.quote(clear, safe=""), urllib.parse.quote_plus(clear)]
    return sorted({p for p in found if p}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***``.

    Credentials are found by :func:`_split_url`, so a password holding ``/ # ? @ :`` or
    ``%`` is redacted whole (an ``@`` in a path or query after a ``host:port`` may make it
    redact more than the password; it never redacts less).
    """
    parts = _split_url(url)
    if parts is None:
        return url
    auth = ""
    if parts.userinfo is not None:
        user, colon, _ = parts.userinfo.partition(":")
        auth = f"{user}:***@" if colon else f"{parts.userinfo}@"
    path, qmark, items, fragment = _query_items(parts.rest)
    query = "&".join(f"{k}=***" if _is_secret_item(k, v) else k + eq + v for k, eq, v in items)
    if fragment and items and _is_secret_item(items[-1][0], items[-1][2]):
        fragment = "#***"  # a '#' inside the last (secret) value
    return parts.prefix + auth + parts.hostport + path + qmark + query + fragment


def ffmpeg_url(url: str) -> str:
    """The URL as FFmpeg must get it: user and password percent-encoded.

    FFmpeg ends the authority at the first ``/``, ``?`` or ``#`` (``Pa/ss`` fails with
    "Invalid argument"); its RTSP and HTTP(S) protocols percent-decode the credentials, so
    they are encoded here (valid ``%XX`` kept: idempotent on an encoded URL). Other
    protocols and URLs without credentials are returned unchanged.
    """
    parts = _split_url(url)
    if parts is None or parts.userinfo is None:
        return url
    if parts.prefix[:-3].lower().rsplit("+", 1)[-1] not in _DECODING_SCHEMES:
        return url
    user, colon, pw = parts.userinfo.partition(":")
    return f"{parts.prefix}{_pct_encode(user)}{colon}{_pct_encode(pw)}@{parts.hostport}{parts.rest}"


class Scrubber:
    """Removes known secrets (URL passwords, tokens) from any text before it is shown."""

    def __init__(self, urls: list[str] = (), extra: list[str] = ()):
        self._pairs: list[tuple[str, str]] = []
        secrets: set[str] = set(x for x in extra if x)
        for url in urls:
            if url and url_scheme(url) != "file":
                red = redact_url(url)
                for clear in dict.fromkeys((url, ffmpeg_url(url))):  # as configured, as FFmpeg saw it
                    if red != clear:
                        self._pairs.append((clear, red))
                secrets.update(_secret_parts(url))
        self._pairs.sort(key=lambda p: len(p[0]), reverse=True)
        self._secrets = sorted(secrets, key=len, reverse=True)

    @classmethod
    def from_replacements(cls, pairs: list[tuple[str, str]]) -> Scrubber:
        """A scrubber that makes the ``replacements()`` of another (in a worker process)."""
        scrubber = cls()
        scrubber._pairs = [(clear, red) for clear, red in pairs]
        return scrubber

    def replacements(self) -> list[tuple[str, str]]:
        """What this scrubber replaces, in order: (clear text, what it becomes)."""
        return self._pairs + [(secret, "***") for secret in self._secrets]

    def __call__(self, text: Any) -> str:
        s = str(text)
        for clear, red in self._pairs:
            s = s.replace(clear, red)
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, "***")
        return s


def url_host(url: str) -> str | None:
    """The host name or address of a ``scheme://`` URL (no port, no brackets, never the
    userinfo: split as ``redact_url`` does); None for a file or a URL without one."""
    parts = _split_url(url)
    if parts is None:
        return None
    hostport = parts.hostport
    host = hostport[1:].split("]", 1)[0] if hostport.startswith("[") else hostport.split(":", 1)[0]
    return host or None


def stream_name_for(source: str, taken: set[str]) -> str:
    """A safe, unique stream name derived from a URL or path (for ``vqmon run URL...``)."""
    parts = _split_url(source)
    if parts is None:
        base = Path(source.split("file:", 1)[-1] if source.startswith("file:") else source).stem
    else:  # the host and the last path segment: never the userinfo (split as redact_url does)
        host = (url_host(source) or "stream").lower()
        path = _query_items(parts.rest)[0].strip("/")
        tail = path.split("/")[-1] if path else ""
        base = f"{host}-{tail}" if tail else host
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.-")[:56] or "stream"
    name, i = base, 2
    while name in taken:
        name = f"{base}-{i}"
        i += 1
    taken.add(name)
    return name
