"""A threaded WSGI server on one address, run in a daemon thread (what prometheus_client's
``start_http_server`` does, with our own application instead of its /metrics-only one)."""
from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # a slow client (a browser tab on a bad link) must not hold up Prometheus' scrape
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        # one line per request would drown the monitor's own log (a page polls every 2 s)
        log.debug("%s %s", self.address_string(), format % args)


class HttpServer:
    """``HttpServer(app, host, port).start()``; ``address`` is the bound (host, port)."""

    def __init__(self, app, host: str, port: int):
        # the socket family follows the address, so "[::1]:9108" and "0.0.0.0:9108" both work
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
        self.app = app
        self._httpd = make_server(sockaddr[0], port, app, server_class=server_class, handler_class=_QuietHandler)
        # what the socket is bound to (the port picked for port 0; "localhost" shown as its address)
        self.address: tuple[str, int] = self._httpd.socket.getsockname()[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
