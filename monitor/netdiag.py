"""What FFmpeg does not say when a network source fails to open: that its host name did not
resolve (FFmpeg reports "Input/output error" for RTSP, HTTP and the rest alike)."""
from __future__ import annotations

import socket
import threading


def unresolved_host(host: str | None, timeout: float = 5.0) -> str | None:
    """"the host name 'x' did not resolve (why)" when resolving ``host`` fails; None when it
    resolves (an address always does), when there is no host, or when the resolver takes
    longer than ``timeout`` seconds (it is asked in a thread, so the caller is never held
    longer)."""
    if not host:
        return None
    failed: list[str] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            failed.append(e.strerror or str(e))
        except (OSError, UnicodeError):
            pass

    t = threading.Thread(target=resolve, name="resolve", daemon=True)
    t.start()
    t.join(timeout)
    return f"the host name {host!r} did not resolve ({failed[0]})" if failed else None
