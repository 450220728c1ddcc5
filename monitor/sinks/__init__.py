"""Where scored frames, stream states and events go: one module per sink (``base.Sink``).

``SINKS`` registers them by their configuration section; the monitor builds the enabled ones.
"""
from . import mqtt_sink, redis_sink
from .base import Sink, SinkConfig, SinkContext, SinkStatus

SINKS: dict[str, type[Sink]] = {sink.name: sink for sink in (redis_sink.RedisSink, mqtt_sink.MqttSink)}

__all__ = ["SINKS", "Sink", "SinkConfig", "SinkContext", "SinkStatus"]
