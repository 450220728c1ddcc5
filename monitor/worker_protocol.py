"""What crosses between a stream's worker process (:mod:`monitor.worker`) and its supervisor
(:class:`monitor.source.StreamWorker`).

Supervisor -> worker: one JSON line on the worker's stdin, a :class:`WorkerSpec` dumped
(``model_dump``) and validated again on the other side (``model_validate``): the stream's
settings cross typed, with the defaults of :mod:`monitor.stream_config` and no others.

Worker -> supervisor: ``<u32 header length><u32 payload length>`` then a JSON header and the
payload (the raw ``SxSx3`` uint8 frame for ``frame`` messages), over the worker's stdout.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .stream_config import StreamConfig

EXIT_ENDED = 0     # a non-looping file reached its end
EXIT_FAILED = 3    # a permanent error (non-looping file that cannot be read)
TICK_EVERY = 0.5   # seconds between liveness messages from a worker

_HDR = struct.Struct("<II")


class WorkerSpec(BaseModel):
    """What a worker process is told at its start."""

    model_config = ConfigDict(extra="forbid")

    stream: StreamConfig
    view: dict[str, Any] = Field(description="the model's input view (engines.views.InputView.to_meta)")
    replacements: list[tuple[str, str]] = Field(
        default_factory=list, repr=False,
        description="the supervisor's Scrubber.replacements(): the worker scrubs its texts alike")
    nvdec_failed: str | None = Field(
        None, description="why NVDEC failed mid-stream in an earlier worker process: software")

    def to_line(self) -> bytes:
        return (json.dumps(self.model_dump()) + "\n").encode()

    @classmethod
    def from_line(cls, line: str | bytes) -> WorkerSpec:
        return cls.model_validate(json.loads(line))


class Channel:
    """Framed messages to the supervisor over a private copy of stdout."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, header: dict, payload: bytes | memoryview = b"") -> None:
        h = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
        self._write(_HDR.pack(len(h), len(payload)) + h)
        if payload:
            self._write(payload)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def read_messages(buf: bytearray) -> Iterator[tuple[dict, bytearray | None]]:
    """The complete messages at the start of ``buf`` (removed from it): (header, payload)."""
    while len(buf) >= _HDR.size:
        hlen, plen = _HDR.unpack_from(buf, 0)
        total = _HDR.size + hlen + plen
        if len(buf) < total:
            return
        header = json.loads(bytes(buf[_HDR.size:_HDR.size + hlen]))
        payload = bytearray(buf[_HDR.size + hlen:total]) if plen else None
        del buf[:total]
        yield header, payload
