#!/usr/bin/env python3
"""Example Alertmanager webhook receiver: prints the alerts it receives (stdlib only).

    python3 deploy/alertmanager/webhook_example.py            # listens on 127.0.0.1:9095
    python3 deploy/alertmanager/webhook_example.py --port 9195

deploy/alertmanager/alertmanager.yml sends warnings to http://127.0.0.1:9095/alerts and
critical alerts to http://127.0.0.1:9095/pager. Each notification (Alertmanager webhook
payload version 4) is printed as one line per alert:

    [pager] FIRING critical VqmonStreamDown stream=cam1 since 2024-05-01T10:00:00Z: Stream cam1 is down

Binds to the loopback interface by default; it has no authentication, so keep it there.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

MAX_BODY = 4 * 1024 * 1024


def format_alerts(payload: dict[str, Any], path: str = "/alerts") -> list[str]:
    """One printable line per alert of an Alertmanager webhook payload."""
    where = path.strip("/") or "alerts"
    lines = []
    for a in payload.get("alerts", []) or []:
        labels = a.get("labels", {}) or {}
        ann = a.get("annotations", {}) or {}
        status = str(a.get("status", payload.get("status", "?"))).upper()
        extra = " ".join(f"{k}={labels[k]}" for k in ("stream", "condition", "instance") if k in labels)
        when = a.get("startsAt", "")
        if status == "RESOLVED" and a.get("endsAt"):
            when = f"{when} until {a['endsAt']}"
        text = ann.get("summary") or ann.get("description") or ""
        lines.append(f"[{where}] {status} {labels.get('severity', '-')} {labels.get('alertname', '?')}"
                     f"{' ' + extra if extra else ''} since {when}: {text}")
    return lines


def make_handler(out: TextIO, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vqmon-webhook-example/1"

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.send_error(413 if length > MAX_BODY else 411)
                return
            body = self.rfile.read(length)
            try:
                payload = json.loads(body or b"{}")
                if not isinstance(payload, dict):
                    raise ValueError("payload is not a JSON object")
            except ValueError as exc:
                self.send_error(400, f"bad JSON: {exc}")
                return
            lines = format_alerts(payload, self.path)
            with lock:
                for line in lines:
                    print(line, file=out)
                out.flush()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def do_GET(self) -> None:  # noqa: N802
            body = b"vqmon webhook example: POST Alertmanager notifications here\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep stdout for alerts
            pass

    return Handler


def make_server(host: str = "127.0.0.1", port: int = 9095, out: TextIO | None = None) -> ThreadingHTTPServer:
    """The HTTP server (not started); port 0 picks a free one (see ``server_address``)."""
    return ThreadingHTTPServer((host, port), make_handler(out or sys.stdout, threading.Lock()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=9095, help="port (default 9095)")
    args = ap.parse_args(argv)
    srv = make_server(args.host, args.port)
    print(f"listening on http://{srv.server_address[0]}:{srv.server_address[1]}/alerts", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
