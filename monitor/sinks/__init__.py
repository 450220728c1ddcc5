"""Where scored frames, stream states and events go: one module per sink (``base.Sink``).

``SINKS`` registers them by their configuration section; the monitor builds the enabled ones.
"""
from .base import Sink, SinkConfig, SinkContext, SinkStatus
from .redis_sink import RedisSink

SINKS: dict[str, type[Sink]] = {sink.name: sink for sink in (RedisSink,)}

__all__ = ["SINKS", "Sink", "SinkConfig", "SinkContext", "SinkStatus"]
