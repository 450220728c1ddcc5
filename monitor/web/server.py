"""A threaded WSGI server on one address, run in a daemon thread (what prometheus_client's
``start_http_server`` does, with our own application instead of its /metrics-only one).

Idle or half-sent connections cannot pile up: each connection has a read timeout
(``read_timeout``: a client that sends nothing for that long is dropped), and at most
``max_connections`` are served at once; one more is answered ``503`` and closed at once, so a
flood of idle sockets costs no threads and Prometheus' scrape gets through once they time out.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0     # seconds a connection may stay silent (request line, headers, body)
MAX_CONNECTIONS = 64    # connections served at once
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
         b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many connections, retry\r\n")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # a slow client (a browser tab on a bad link) must not hold up Prometheus' scrape
    daemon_threads = True
    max_connections = MAX_CONNECTIONS

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("%s: %d connections open: refused", client_address[0], self.max_connections)
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (TimeoutError, ConnectionError)):  # an idle or vanished client
            log.debug("%s: %s", client_address[0], type(exc).__name__)
        else:
            log.exception("HTTP request from %s failed", client_address[0])


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # socket timeout of each connection (StreamRequestHandler.setup)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        # one line per request would drown the monitor's own log (a page polls every 2 s)
        log.debug("%s %s", self.address_string(), format % args)


class HttpServer:
    """``HttpServer(app, host, port).start()``; ``address`` is the bound (host, port)."""

    def __init__(self, app, host: str, port: int, read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS):
        # the socket family follows the address, so "[::1]:9108" and "0.0.0.0:9108" both work
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        server_class = type("_Server", (_ThreadingServer,), {"address_family": family,
                                                             "max_connections": int(max_connections)})
        handler_class = type("_Handler", (_QuietHandler,), {"timeout": float(read_timeout)})
        self.app = app
        self._httpd = make_server(sockaddr[0], port, app, server_class=server_class, handler_class=handler_class)
        # what the socket is bound to (the port picked for port 0; "localhost" shown as its address)
        self.address: tuple[str, int] = self._httpd.socket.getsockname()[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
