"""The MQTT sink against a real mosquitto broker (Debian package ``mosquitto``) on 127.0.0.1.

Topics and payloads, retained state for a late subscriber, the last will when vqmon dies,
credentials that never show, and a broker restart in which nothing is lost beyond what
``vqmon_mqtt_messages_lost_total`` counts.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conftest import ROOT, SAMPLES, vqmon_command, wait_for
from monitor.config import Scrubber
from monitor.redis_server import free_port
from monitor.sinks import SinkContext
from monitor.sinks.mqtt_sink import MqttConfig, MqttSink

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWORD = "s3/cr#t?p@ss:w%rd"  # / # ? @ : %
BIKES_SIZE = [640, 272]  # monitor/samples/bikes.mp4


class Mosquitto:
    """One broker process; ``start()`` again after ``stop()`` reuses its port and its saved
    sessions (persistence), as a restarted production broker would."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None):
        self.port = free_port()
        self.dir = workdir
        lines = [f"listener {self.port} 127.0.0.1", "user root", "persistence true",
                 f"persistence_location {workdir}/", f"log_dest file {workdir}/mosquitto.log"]
        if users:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, pw in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, pw], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is not None or _accepts(self.port), 20, interval=0.05,
                 message="mosquitto listening")
        assert self.proc.poll() is None, self.proc.stderr.read().decode()
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def mosquitto(tmp_path):
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip("no mosquitto broker (apt-get install mosquitto)")
    brokers: list[Mosquitto] = []

    def make(users: dict[str, str] | None = None) -> Mosquitto:
        d = tmp_path / f"broker{len(brokers)}"
        d.mkdir()
        brokers.append(Mosquitto(d, users).start())
        return brokers[-1]

    yield make
    for b in brokers:
        b.stop()


class Subscriber:
    """A real MQTT client that records every message under ``topics``; with ``session`` it keeps
    a persistent session (QoS 1), so what the broker accepted while it was away still arrives."""

    def __init__(self, broker: Mosquitto, topics: str, auth: tuple[str, str] | None = None,
                 session: str | None = None):
        import paho.mqtt.client as mqtt
        self.topics = topics
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(20), f"no SUBACK for {topics}"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self._lock:
            return [(payload, retain) for t, payload, retain in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p, _ in self.on(topic)]

    def everything(self) -> bytes:
        with self._lock:
            return b"\n".join(t.encode() + b" " + p for t, p, _ in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _sink(broker: Mosquitto, registry: CollectorRegistry, **settings) -> MqttSink:
    cfg = MqttConfig(enabled=True, port=broker.port, **settings)
    scrub = Scrubber(extra=cfg.secrets())
    return MqttSink(cfg, SinkContext(streams=[], registry=registry, scrub=scrub, announce=print))


def test_states_and_events_on_their_topics_and_retained_for_a_late_subscriber(mosquitto, monitor_factory):
    broker = mosquitto()
    sub = Subscriber(broker, "site/vq/#")
    closed = free_port()
    try:
        m = monitor_factory({
            "defaults": {"sample_rate": 2.0, "reconnect": {"initial_delay": 0.3, "max_delay": 1.0}},
            "streams": [{"name": "clip", "url": str(SAMPLES / "bikes.mp4"), "loop": True},
                        {"name": "cam", "url": f"rtsp://127.0.0.1:{closed}/live", "timeouts": {"open": 2}}],
            "redis": {"enabled": False},
            "mqtt": {"enabled": True, "port": broker.port, "topic_prefix": "site/vq"},
        })
        wait_for(lambda: any("score" in s and s["state"] == "up" for s in sub.json_on("site/vq/clip/state")), 60,
                 message="a scored state of the clip")
        wait_for(lambda: any(e["condition"] == "stream_down" for e in sub.json_on("site/vq/cam/events")), 60,
                 message="the camera's stream_down event")
        assert sub.on("site/vq/available")[0][0] == b"online"
        state = [s for s in sub.json_on("site/vq/clip/state") if "score" in s][-1]
        assert {"stream", "state", "up", "error", "url", "model", "sample_rate", "scored", "dropped", "reconnects",
                "fps", "decoded", "updated", "ts", "pts", "score", "score_smoothed", "worst", "worst_box",
                "frame_size"} <= set(state)
        assert state["stream"] == "clip" and state["up"] is True and state["error"] == "" and state["model"] == "bifusion"
        assert state["frame_size"] == BIKES_SIZE and len(state["worst_box"]) == 4 and 0 <= state["score"] <= 100
        assert state["sample_rate"] == 2.0 and state["scored"] >= 1
        down = next(e for e in sub.json_on("site/vq/cam/events") if e["condition"] == "stream_down")
        assert down["kind"] == "start" and down["severity"] == "critical" and down["stream"] == "cam"
        assert "cam" in down["message"] and isinstance(down["seq"], int) and down["ts"] > 0
        assert not any(t.startswith("site/vq/clip/events") and b"stream_down" in p for t, p, _ in sub.messages)

        late = Subscriber(broker, "site/vq/#")  # connects after everything was published
        try:
            wait_for(lambda: late.on("site/vq/clip/state") and late.on("site/vq/available"), 20,
                     message="the retained state and availability")
            payload, retained = late.on("site/vq/clip/state")[0]
            assert retained and json.loads(payload)["stream"] == "clip"
            assert late.on("site/vq/available")[0] == (b"online", True)
            assert not late.on("site/vq/cam/events")  # events are not retained
        finally:
            late.close()
        published = m.metrics.registry.get_sample_value("vqmon_mqtt_messages_published_total", {"kind": "event"})
        assert published >= 1 and m.metrics.registry.get_sample_value("vqmon_mqtt_up") == 1
        m.stop()  # a clean exit: "offline" said, not left to the last will
        wait_for(lambda: sub.on("site/vq/available")[-1][0] == b"offline", 20, message="offline at exit")
        assert sub.json_on("site/vq/clip/state")[-1]["state"] == "stopped"
    finally:
        sub.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_last_will_when_vqmon_dies_and_the_password_never_shows(mosquitto, tmp_path):
    broker = mosquitto(users={"vqmon": PASSWORD, "watcher": "watch"})
    sub = Subscriber(broker, "vq/#", auth=("watcher", "watch"))
    metrics_port = free_port()
    cfg = tmp_path / "vqmon.yaml"
    cfg.write_text(f"""
defaults: {{sample_rate: 2}}
streams:
  - {{name: clip, url: "{SAMPLES / 'bikes.mp4'}", loop: true}}
engine: {{backend: cpu}}
redis: {{enabled: false}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
mqtt: {{enabled: true, port: {broker.port}, username: vqmon, password: "${{MQTT_PASSWORD}}", topic_prefix: vq}}
""")
    env = dict(os.environ, MQTT_PASSWORD=PASSWORD, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*vqmon_command(), "run", "-c", str(cfg), "--no-console"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or any("score" in s for s in sub.json_on("vq/clip/state")), 180,
                 message="vqmon connected with the password and publishing")
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert sub.on("vq/available")[-1][0] == b"online"
        metrics = _scrape(metrics_port)
        assert "vqmon_mqtt_up 1.0" in metrics
        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker must say it
        wait_for(lambda: sub.on("vq/available")[-1][0] == b"offline", 30, message="the last will")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
    shown = out + err + metrics.encode() + sub.everything()
    for form in {PASSWORD, urllib.parse.quote(PASSWORD, safe=""), urllib.parse.quote_plus(PASSWORD)}:
        assert form.encode() not in shown


def test_a_refused_login_is_said_without_the_password(mosquitto, caplog):
    broker = mosquitto(users={"vqmon": "right"})
    sink = _sink(broker, CollectorRegistry(), username="vqmon", password=PASSWORD)
    caplog.set_level("INFO", logger="monitor.sinks.mqtt_sink")
    sink.start()
    try:
        wait_for(lambda: "refused" in caplog.text, 20, message="the refusal logged")
        assert not sink.status().connected and "Not authorized" in sink.last_error
    finally:
        sink.stop()
    assert PASSWORD not in caplog.text and "right" not in caplog.text


def test_broker_restart_loses_nothing_beyond_what_is_counted(mosquitto):
    broker = mosquitto()
    sub = Subscriber(broker, "rs/#", session="counter")  # persistent: the restart keeps its queue
    registry = CollectorRegistry()
    value = registry.get_sample_value
    sink = _sink(broker, registry, topic_prefix="rs", buffer_size=20, flush_timeout=10)
    sent = 0

    def put(n: int, connected: bool = True) -> None:
        nonlocal sent
        for _ in range(n):
            sink.put_event({"stream": "cam", "condition": "test", "kind": "info", "n": sent})
            sink.set_state("cam", {"state": "up", "n": sent})
            sent += 1
            if connected and sent % 10 == 0:  # the buffer (20) bounds what waits even while connected
                wait_for(lambda: sink.status().buffered == 0, 20, interval=0.02, message="the buffer written")

    def events() -> dict[int, dict]:
        return {e["seq"]: e for e in sub.json_on("rs/cam/events")}

    sink.start()
    try:
        wait_for(lambda: sink.status().connected, 20, message="connected")
        put(30)
        wait_for(lambda: len(events()) == 30, 20, message="the first 30 events")
        broker.stop()
        wait_for(lambda: not sink.status().connected, 20, message="the sink sees the broker gone")
        put(60, connected=False)  # 60 events into a buffer of 20
        assert value("vqmon_mqtt_messages_lost_total", {"kind": "event"}) >= 40
        assert value("vqmon_mqtt_buffered_messages") <= 20 + 1 + 100  # events, a state, paho's in-flight window
        broker.start()
        wait_for(lambda: sink.status().connected and sink.status().buffered == 0, 30,
                 message="reconnected and the buffer written")
        put(30)
    finally:
        sink.stop()
    try:
        published = value("vqmon_mqtt_messages_published_total", {"kind": "event"})
        lost = value("vqmon_mqtt_messages_lost_total", {"kind": "event"})
        wait_for(lambda: len(events()) >= published, 30, message="every acknowledged event delivered")
        got = events()
        assert len(got) == published and len(got) + lost == sent == 120, (len(got), published, lost)
        assert 40 <= lost <= 60 and sink.status().lost == lost + value("vqmon_mqtt_messages_lost_total", {"kind": "state"})
        assert set(range(30)) <= set(got) and set(range(90, 120)) <= set(got)  # before and after the outage
        assert all(got[s]["n"] == s for s in got)
        late = Subscriber(broker, "rs/#")
        try:
            wait_for(lambda: late.json_on("rs/cam/state"), 20, message="the retained state")
            assert late.json_on("rs/cam/state")[-1]["n"] == sent - 1  # the newest state survived the restart
        finally:
            late.close()
    finally:
        sub.close()
