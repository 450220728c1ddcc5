"""MQTT sink (paho-mqtt): each stream's state and events on topics under ``topic_prefix``, for
camera fleets and home automation. Topics and payloads: docs/mqtt.md.

``{prefix}/{stream}/state``   JSON, retained: the stream's latest state (as the Redis state hash)
``{prefix}/{stream}/events``  JSON, one message per event (stream up/down, alerts), with ``seq``
``{prefix}/available``        ``online`` / ``offline``, retained; ``offline`` is also the last
                              will, so the broker says it when vqmon dies (sharded:
                              ``{prefix}/available/{shard index}``)

Broker away: paho reconnects (1 s to 10 s apart); events wait in a bounded buffer (the oldest
dropped when it is full), states are kept as the latest per stream and published again on every
connect. A message counts as published when the broker acknowledged it (QoS 1, 2) or it was
written to the connection (QoS 0); what never got there is counted in
``vqmon_mqtt_messages_lost_total{kind}`` (QoS 0 also loses what was on a connection that broke).
"""
from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from pydantic import Field

from .base import Sink, SinkConfig, SinkContext, SinkStatus, StrictModel

log = logging.getLogger(__name__)

KINDS = ("state", "event")
INFLIGHT_WINDOW = 100  # messages handed to paho and not yet acknowledged, at most


class MqttTls(StrictModel):
    enabled: bool = False
    ca_certs: str | None = Field(None, description="CA bundle that signed the broker's certificate; null = the system's")
    certfile: str | None = Field(None, description="client certificate (mutual TLS)")
    keyfile: str | None = Field(None, description="its private key")
    insecure: bool = Field(False, description="do not check the broker's host name (test brokers only)")


class MqttConfig(SinkConfig):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    client_id: str | None = Field(None, description="null = vqmon-<host name>-<process id>")
    topic_prefix: str = Field("vqmon", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
                              description="topic levels of A-Z a-z 0-9 _ . - (no wildcards)")
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(30, ge=5, le=3600, description="seconds; the broker sends the last will after 1.5x")
    tls: MqttTls = Field(default_factory=MqttTls)
    buffer_size: int = Field(1000, ge=1, description="events held while the broker is unreachable")
    flush_timeout: float = Field(2.0, ge=0, le=60, description="seconds to flush the buffer at exit")

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def summary(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return (f"{'mqtts' if self.tls.enabled else 'mqtt'}://{user}{self.host}:{self.port} "
                f"topics {self.topic_prefix}/<stream>/state|events, qos {self.qos}")


class MqttMetrics:
    def __init__(self, registry):
        self.up = Gauge("vqmon_mqtt_up", "1 while connected to the MQTT broker", registry=registry)
        self.buffered = Gauge("vqmon_mqtt_buffered_messages",
                              "Messages waiting for the MQTT broker (events, states, unacknowledged)", registry=registry)
        self.published = Counter("vqmon_mqtt_messages_published_total",
                                 "Messages the MQTT broker acknowledged, by kind: state, event", ["kind"], registry=registry)
        self.lost = Counter("vqmon_mqtt_messages_lost_total",
                            "Messages that never reached the MQTT broker (buffer full, exit), by kind",
                            ["kind"], registry=registry)
        for kind in KINDS:
            self.published.labels(kind)
            self.lost.labels(kind)


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    return v


def _payload(fields: dict[str, Any]) -> bytes:
    return json.dumps({k: _json_value(v) for k, v in fields.items()}, separators=(",", ":"), default=str).encode()


class MqttSink(Sink):
    name = "mqtt"
    config_class = MqttConfig

    def __init__(self, config: MqttConfig, context: SinkContext):
        self.config, self.context = config, context
        self.metrics = MqttMetrics(context.registry)
        prefix = config.topic_prefix
        shard = context.shard
        self.availability_topic = f"{prefix}/available" + (f"/{shard.index}" if shard else "")
        self._events: deque[dict[str, Any]] = deque()
        self._states: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()      # streams whose state is not published yet
        self._inflight: list[tuple[Any, str]] = []  # (paho's MQTTMessageInfo, kind) not yet acknowledged
        self._seq = 0
        self._lost = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = math.inf
        self.connected = False
        self._broken = False               # the connection broke since the writer last looked
        self.last_error: str | None = None
        self._client = None
        self._thread = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)

    # -- producer API (any thread) ----------------------------------------------------------------
    def put_scored(self, scored, smoothed: float) -> None:
        """Per-frame records are Redis's: the state (``set_state``) carries the latest score."""

    def put_event(self, event: dict[str, Any]) -> None:
        fields = {"ts": time.time(), **event}
        jpeg = fields.pop("snapshot_jpeg", None)
        if jpeg:
            fields["snapshot_jpeg_b64"] = base64.b64encode(jpeg).decode("ascii")
        with self._lock:
            fields["seq"] = self._seq
            self._seq += 1
            self._events.append(fields)
            if len(self._events) > self.config.buffer_size:
                self._events.popleft()
                self._count_lost("event", 1)
        self._wake.set()

    def set_state(self, stream: str, state: dict[str, Any]) -> None:
        with self._lock:
            self._states.setdefault(stream, {}).update(state)
            self._dirty.add(stream)
        self._wake.set()

    def status(self) -> SinkStatus:
        return SinkStatus(connected=self.connected, buffered=self._buffered(), lost=self._lost)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        import paho.mqtt.client as mqtt

        c = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=c.client_id or f"vqmon-{socket.gethostname()}-{os.getpid()}")
        if c.username or c.password:
            client.username_pw_set(c.username, c.password)
        if c.tls.enabled:
            client.tls_set(ca_certs=c.tls.ca_certs, certfile=c.tls.certfile, keyfile=c.tls.keyfile)
            client.tls_insecure_set(c.tls.insecure)
        client.will_set(self.availability_topic, "offline", qos=c.qos, retain=True)
        client.reconnect_delay_set(1, 10)
        client.on_connect, client.on_disconnect, client.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        client.connect_async(c.host, c.port, keepalive=c.keepalive)
        client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        """Flush for ``flush_timeout`` s, say ``offline``, disconnect; what is left is lost."""
        if self._client is None:
            return
        self._deadline = time.monotonic() + self.config.flush_timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(self.config.flush_timeout + 2.0)
        if self.connected:
            info = self._client.publish(self.availability_topic, "offline", qos=self.config.qos, retain=True)
            try:
                info.wait_for_publish(max(0.5, self._deadline - time.monotonic()))
            except RuntimeError:  # the connection broke meanwhile: the broker sends the last will
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self._client = None
        self.connected = False
        self.metrics.up.set(0)
        with self._lock:
            self._settle()
            left = len(self._inflight) + len(self._events) + len(self._dirty)
            self._lose_inflight()
            self._count_lost("event", len(self._events))
            self._count_lost("state", len(self._dirty))
            self._events.clear(), self._dirty.clear()
        if left:
            log.warning("mqtt: %d message(s) could not be published before exit", left)
        self.metrics.buffered.set(0)

    # -- paho callbacks (its network thread) ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._down(f"the broker refused the connection: {reason_code}")
            return
        log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
        client.publish(self.availability_topic, "online", qos=self.config.qos, retain=True)
        with self._lock:  # a restarted broker may have lost the retained states: publish them again
            self._dirty.update(self._states)
        self.connected, self.last_error = True, None
        self.metrics.up.set(1)
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self._down(f"cannot connect to {self.config.host}:{self.config.port}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self._stop.is_set():  # (a refused connect said why already)
            self._down(f"disconnected ({reason_code})")
        self._broken = True
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._wake.set()  # the writer sees which of its messages are published

    def _down(self, why: str) -> None:
        why = self.context.scrub(why)
        if self.connected or why != self.last_error:
            log.warning("mqtt: unavailable (%s); buffering (%d message(s) waiting)", why, self._buffered())
        self.connected, self.last_error = False, why
        self.metrics.up.set(0)

    # -- writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                self._settle()
                if self._broken and self.config.qos == 0:  # QoS 0: what was on the broken connection is gone
                    self._lose_inflight()
                self._broken = False
            if self.connected:
                self._send()
            self.metrics.buffered.set(self._buffered())
            if self._stop.is_set() and (not self._buffered() or time.monotonic() > self._deadline):
                return

    def _send(self) -> None:
        with self._lock:
            states = [(s, dict(self._states[s])) for s in self._dirty]
            self._dirty.clear()
        prefix = self.config.topic_prefix
        for stream, state in states:
            if not self._publish("state", f"{prefix}/{stream}/state", _payload(state), retain=True):
                with self._lock:
                    self._dirty.add(stream)
        while len(self._inflight) < INFLIGHT_WINDOW:
            with self._lock:
                if not self._events:
                    return
                event = self._events.popleft()
            if not self._publish("event", f"{prefix}/{event.get('stream', '_')}/events", _payload(event),
                                 retain=False):
                with self._lock:
                    self._events.appendleft(event)
                return

    def _publish(self, kind: str, topic: str, payload: bytes, retain: bool) -> bool:
        """Hand one message to paho; False if it did not take it (the connection is down)."""
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, payload, qos=self.config.qos, retain=retain)
        # QoS 1 and 2: paho keeps a message it could not send and sends it once connected again
        if info.rc != mqtt.MQTT_ERR_SUCCESS and not (self.config.qos and info.rc == mqtt.MQTT_ERR_NO_CONN):
            return False
        with self._lock:
            self._inflight.append((info, kind))
        return True

    def _settle(self) -> None:
        """Count the acknowledged messages as published (lock held)."""
        waiting = []
        for info, kind in self._inflight:
            if info.is_published():
                self.metrics.published.labels(kind).inc()
            else:
                waiting.append((info, kind))
        self._inflight = waiting

    def _lose_inflight(self) -> None:
        """Count the unacknowledged messages as lost (lock held)."""
        for _, kind in self._inflight:
            self._count_lost(kind, 1)
        self._inflight.clear()

    def _count_lost(self, kind: str, n: int) -> None:
        if n:
            self._lost += n
            self.metrics.lost.labels(kind).inc(n)

    def _buffered(self) -> int:
        return len(self._events) + len(self._dirty) + len(self._inflight)
