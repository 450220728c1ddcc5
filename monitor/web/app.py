"""The WSGI application behind ``metrics.listen``.

Routes (GET/HEAD only; nothing here changes the monitor)::

    /metrics                              Prometheus exposition (prometheus_client's WSGI app)
    /healthz                              200 while the scoring thread and the housekeeping loop live
    /readyz                               200 when the engines are loaded and a stream is up (or none assigned)
    /                                     live view page (static/index.html; polls /api/streams)
    /static/app.js, /static/app.css, /static/favicon.svg
    /api/streams[?history=N]              every stream with its recent scores (N <= 300, default all)
    /api/streams/{name}                   one stream, with detector values and its whole history
    /api/streams/{name}/thumbnail.jpg     latest scored frame with the region map overlaid

With ``metrics.live_view: false`` only /metrics, /healthz and /readyz answer.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app

from ..overlay import overlay_jpeg
from .status import instance_status, stream_status

log = logging.getLogger(__name__)

STATIC = {  # the only files served: no path from a request ever reaches the file system
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
# the page loads its own script, style and thumbnails and nothing else
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
_STREAM_PATH = re.compile(r"/api/streams/([A-Za-z0-9_.-]{1,64})(/thumbnail\.jpg)?")
_STATUS = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 404: "404 Not Found",
           405: "405 Method Not Allowed", 500: "500 Internal Server Error", 503: "503 Service Unavailable"}

Response = tuple[int, list[tuple[str, str]], bytes]


class ThumbnailCache:
    """One rendered JPEG per stream, redrawn only when the stream has a newer scored frame,
    however many viewers ask (and nothing is drawn while nobody looks)."""

    def __init__(self, render: Callable[..., bytes] = overlay_jpeg):
        self._render = render
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, bytes]] = {}
        self.renders = 0
        self.render_seconds = 0.0

    def get(self, name: str, version: int, scored) -> bytes:
        with self._lock:  # concurrent requests for the same new frame render it once
            hit = self._cache.get(name)
            if hit is not None and hit[0] == version:
                return hit[1]
            t0 = time.perf_counter()
            f = scored.frame
            jpeg = self._render(f.image, scored.region_map.values, (f.width, f.height))
            self.render_seconds += time.perf_counter() - t0
            self.renders += 1
            self._cache[name] = (version, jpeg)
            return jpeg


class LiveApp:
    def __init__(self, monitor, live_view: bool = True):
        self.monitor = monitor
        self.live_view = live_view
        self.metrics_app = make_wsgi_app(monitor.metrics.registry)
        self.thumbnails = ThumbnailCache()
        files = resources.files(__package__) / "static"
        self._static = {path: (files.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}

    def __call__(self, environ: dict[str, Any], start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if method not in ("GET", "HEAD"):
            status, headers, body = _json(405, {"error": "read-only: GET or HEAD"})
            headers.append(("Allow", "GET, HEAD"))
        else:
            try:
                status, headers, body = self._route(path, environ)
            except Exception:
                log.exception("%s %s failed", method, path)
                status, headers, body = _json(500, {"error": "internal error (see the monitor's log)"})
        headers = headers + SECURITY_HEADERS + [("Content-Length", str(len(body)))]
        start_response(_STATUS[status], headers)
        return [b""] if method == "HEAD" else [body]

    def _route(self, path: str, environ: dict[str, Any]) -> Response:
        if path == "/healthz":
            return _check(self.monitor.health())
        if path == "/readyz":
            return _check(self.monitor.readiness())
        if not self.live_view:
            return _json(404, {"error": "the live view is turned off (metrics.live_view: false)"})
        if path in self._static:
            body, ctype = self._static[path]
            return 200, [("Content-Type", ctype), ("Cache-Control", "no-cache")], body
        if path == "/api/streams":
            return self._streams(environ)
        m = _STREAM_PATH.fullmatch(path)
        rt = self.monitor.streams.get(m.group(1)) if m else None
        if rt is None:
            return _json(404, {"error": "no such stream" if m else "not found"})
        if m.group(2):
            return self._thumbnail(rt, environ)
        alerts = self.monitor.active_alerts()
        return _json(200, {"instance": instance_status(self.monitor),
                           "stream": stream_status(self.monitor, rt, alerts, history=rt.history.maxlen, detail=True)})

    def _streams(self, environ: dict[str, Any]) -> Response:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        limit = max((rt.history.maxlen for rt in self.monitor.streams.values()), default=0)
        try:
            history = min(limit, max(0, int(query.get("history", [limit])[0])))
        except ValueError:
            return _json(400, {"error": "history must be a whole number"})
        alerts = self.monitor.active_alerts()
        return _json(200, {"instance": instance_status(self.monitor),
                           "streams": [stream_status(self.monitor, rt, alerts, history)
                                       for rt in self.monitor.streams.values()]})

    def _thumbnail(self, rt, environ: dict[str, Any]) -> Response:
        last = rt.last_scored
        if last is None:
            return _json(404, {"error": "no frame of this stream has been scored yet"})
        version, scored = last
        etag = f'"{version}"'
        headers = [("ETag", etag), ("Cache-Control", "no-cache")]
        if environ.get("HTTP_IF_NONE_MATCH") == etag:
            return 304, headers, b""
        jpeg = self.thumbnails.get(rt.cfg.name, version, scored)
        return 200, [("Content-Type", "image/jpeg")] + headers, jpeg


def _json(status: int, payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body


def _check(result: tuple[bool, list[str]]) -> Response:
    ok, reasons = result
    return _json(200 if ok else 503, {"status": "ok" if ok else "fail", "reasons": reasons})
