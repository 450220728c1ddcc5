"""What a sink is: where the monitor sends scored frames, stream states and events.

A sink is one module of this package: its settings (a ``SinkConfig``, the YAML section named
after the sink) and a ``Sink``; ``monitor.sinks.SINKS`` registers it. The monitor calls ``put_*``
and ``set_state`` from its threads: a sink must not block them, so it buffers (bounded) while
its server is away and counts what it loses, in its own metrics.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # (not monitor.config nor monitor.batcher: the configuration imports the sinks)
    from prometheus_client import CollectorRegistry

    from ..sharding import Shard


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SinkConfig(StrictModel):
    enabled: bool = False

    def secrets(self) -> list[str]:
        """URLs and passwords in these settings, for the monitor's Scrubber."""
        return []

    def summary(self) -> str:
        """Where the sink writes, without secrets (``vqmon check-config``)."""
        return "enabled"


@dataclass
class SinkContext:
    streams: list                      # the StreamConfigs of the streams this process monitors
    registry: CollectorRegistry        # where the sink's own metrics go
    scrub: Callable[[Any], str]        # removes every known secret from a text
    announce: Callable[[str], None]    # tells the person who started vqmon
    shard: Shard | None = None


@dataclass
class SinkStatus:
    connected: bool
    buffered: int                      # messages waiting for the server
    lost: int                          # messages dropped (buffer full, exit, rejected)
    write_error: str | None = None     # why the server refuses writes while connected (scrubbed)


class Sink(ABC):
    name: ClassVar[str]                          # its configuration section
    config_class: ClassVar[type[SinkConfig]]

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def put_scored(self, scored, smoothed: float) -> None:
        """One scored frame (``monitor.batcher.ScoredFrame``) and the stream's smoothed score after it."""

    @abstractmethod
    def put_event(self, event: dict[str, Any]) -> None:
        """A stream or alert event: plain values (texts scrubbed), ``snapshot_jpeg`` bytes."""

    @abstractmethod
    def set_state(self, stream: str, state: dict[str, Any]) -> None:
        """The stream's state fields that changed (plain values); a sink keeps the merged whole."""

    @abstractmethod
    def stop(self) -> None:
        """Flush for the configured time, count the rest as lost, close."""

    @abstractmethod
    def status(self) -> SinkStatus: ...
