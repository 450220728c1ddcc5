"""The HTTP listener of a running monitor: live-view JSON API, thumbnails, /metrics, /healthz, /readyz.

A real Monitor (real engine, real redis-server, a looping sample clip and an RTSP camera with a
password that nobody answers) serves on a free 127.0.0.1 port; every check goes over HTTP.
"""
from __future__ import annotations

import io
import json
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, wait_for
from engines.types import RegionMap
from monitor import service, stream_state
from monitor.config import MetricsConfig, config_from_dict
from monitor.redis_server import EmbeddedRedis, RedisServerError
from monitor.service import Monitor
from monitor.sharding import owner

SECRET = "secret"
CAMERA = f"rtsp://user:{SECRET}@127.0.0.1:9/x"     # port 9 (discard): nothing listens, the stream stays down
FAST_RETRY = {"initial_delay": 0.3, "max_delay": 1.0}


def get(m: Monitor, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """(status, headers, body) of one request to the monitor's listener."""
    host, port = m.metrics_address
    req = urllib.request.Request(f"http://{host}:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(m: Monitor, path: str) -> tuple[int, dict]:
    status, headers, body = get(m, path)
    assert headers["Content-Type"] == "application/json", (path, headers["Content-Type"])
    return status, json.loads(body)


class Running:
    """A started Monitor with its housekeeping loop (``run``) in a thread, as ``vqmon run`` has."""

    def __init__(self, raw: dict, engine):
        raw = {"console": False, "metrics": {"listen": "127.0.0.1:0"}, "redis": {"enabled": False}, **raw}
        self.monitor = Monitor(config_from_dict(raw), engines={"bifusion": engine}, announce=lambda text: None)
        self.monitor.start()
        self.thread = threading.Thread(target=self.monitor.run, name="housekeeping", daemon=True)
        self.thread.start()

    def stop_loop(self) -> None:
        self.monitor.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def close(self) -> None:
        self.stop_loop()
        self.monitor.stop()


@pytest.fixture(scope="module")
def live(cpu_engine):
    try:
        redis = EmbeddedRedis().start()
    except RedisServerError as e:
        pytest.skip(f"no redis-server: {e}")
    run = Running({
        "defaults": {"reconnect": FAST_RETRY},
        # quality_low set to fire on any score, as critical: an alert the page must show
        "streams": [{"name": "clip", "url": str(SAMPLES / "bikes.mp4"), "loop": True, "sample_rate": 2.0,
                     "alerts": {"quality_low": {"enabled": True, "threshold": 100, "clear_threshold": 100,
                                               "critical_threshold": 100}}},
                    {"name": "cam", "url": CAMERA}],
        "redis": {"url": redis.url},
    }, cpu_engine)
    m = run.monitor
    try:
        wait_for(lambda: m.streams["clip"].scored >= 3 and m.streams["clip"].fps > 0 and m.streams["cam"].error
                 and any(a["stream"] == "clip" for a in m.active_alerts()), 60,
                 message="scores, a frame rate, the clip's alert and a down camera")
        yield m
    finally:
        run.close()
        redis.cleanup()


def test_api_streams_lists_streams_and_updates(live):
    status, first = get_json(live, "/api/streams")
    assert status == 200
    inst = first["instance"]
    assert inst["models"] == {"bifusion": "cpu"} and inst["shard"] is None and inst["sinks"]["redis"]["connected"] is True
    assert [s["name"] for s in first["streams"]] == ["clip", "cam"]
    clip, cam = first["streams"]
    assert clip["state"] == "up" and clip["up"] is True and clip["error"] is None
    assert clip["url"] == str(SAMPLES / "bikes.mp4") and clip["model"] == "bifusion" and clip["sample_rate"] == 2.0
    assert 0 <= clip["worst"] <= clip["score"] <= 100
    assert clip["frame_size"] == [640, 272] and len(clip["map_shape"]) == 2
    x0, y0, x1, y1 = clip["worst_box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 272
    assert clip["fps"] > 5 and clip["decoded"] > 0 and clip["reconnects"] == 0
    low = [a for a in clip["alerts"] if a["condition"] == "quality_low"]
    assert len(low) == 1 and low[0]["severity"] == "critical"
    assert low[0]["started_at"] <= inst["now"] and 0 <= low[0]["peak"] <= 100
    assert all(a["severity"] in ("info", "warning", "critical") for a in clip["alerts"])
    assert clip["thumbnail"] == {"url": "/api/streams/clip/thumbnail.jpg", "version": clip["scored"]}
    assert 0 <= clip["score_smoothed"] <= 100
    hist = clip["history"]
    assert len(hist["t"]) == len(hist["score"]) == len(hist["worst"]) == len(hist["smoothed"]) >= 3
    assert hist["smoothed"][-1] == clip["score_smoothed"]
    assert hist["t"] == sorted(hist["t"]) and hist["score"][-1] == clip["score"]

    assert cam["state"] != "up" and cam["up"] is False and cam["scored"] == 0 and cam["thumbnail"] is None
    assert cam["url"] == "rtsp://user:***@127.0.0.1:9/x"
    assert cam["error"] and cam["reconnects"] >= 1
    assert cam["history"] == {"t": [], "score": [], "worst": [], "smoothed": []}

    # scores keep coming: the next poll has more of them and a newer frame
    later = wait_for(lambda: (lambda s: s if s["scored"] >= clip["scored"] + 2 else None)(
        get_json(live, "/api/streams")[1]["streams"][0]), 30, message="new scores")
    assert later["thumbnail"]["version"] > clip["thumbnail"]["version"]
    assert len(later["history"]["t"]) >= len(hist["t"]) + 2
    assert later["history"]["t"][-1] > hist["t"][-1]
    assert later["history"]["t"][: len(hist["t"])] == hist["t"]  # the same points, nothing rewritten


def test_history_is_bounded_and_selectable(live):
    rt = live.streams["clip"]
    assert rt.history.maxlen == stream_state.HISTORY_LEN == 300
    _, two = get_json(live, "/api/streams?history=2")
    assert all(len(s["history"]["t"]) <= 2 for s in two["streams"]) and len(two["streams"][0]["history"]["t"]) == 2
    _, none = get_json(live, "/api/streams?history=0")
    assert all("history" not in s for s in none["streams"])
    _, big = get_json(live, "/api/streams?history=100000")
    assert len(big["streams"][0]["history"]["t"]) <= 300
    status, err = get_json(live, "/api/streams?history=lots")
    assert status == 400 and "history" in err["error"]


def test_one_stream_and_unknown_paths(live):
    status, one = get_json(live, "/api/streams/clip")
    assert status == 200
    s = one["stream"]
    assert s["name"] == "clip" and {"black", "blur", "freeze_db"} <= set(s["detectors"]) and "fps" in s["timing"]
    assert 3 <= len(s["history"]["t"]) <= min(300, s["scored"])
    for path in ("/api/streams/nope", "/api/streams/nope/thumbnail.jpg", "/api/streams/clip/other",
                 "/api/streams/../etc/passwd", "/static/../app.py", "/nothing"):
        status, body = get_json(live, path)
        assert status == 404, path
    status, body = get_json(live, "/api/streams/cam/thumbnail.jpg")
    assert status == 404 and "no frame" in body["error"]
    status, headers, _ = get(live, "/api/streams", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


THUMBNAIL = "/api/streams/clip/thumbnail.jpg"


def _one_version(m: Monitor, requests):
    """Run ``requests()`` (HTTP calls) until no newer frame was scored while it ran, so that all
    its answers speak of one version: returns (version, scored frame, answers). The clip keeps
    playing; a run that straddles a new frame is simply made again."""
    rt = m.streams["clip"]

    def attempt():
        before = rt.last_scored
        answers = requests()
        after = rt.last_scored
        return (before[0], before[1], answers) if after[0] == before[0] else None

    return wait_for(attempt, 30, interval=0.05, message="thumbnail requests within one scored frame")


def test_thumbnail_is_the_scored_frame_with_overlay(live):
    cache = live.http.app.thumbnails

    def requests():
        renders0 = cache.renders
        first = get(live, THUMBNAIL)
        renders1 = cache.renders
        again = get(live, THUMBNAIL)
        renders2 = cache.renders
        conditional = get(live, THUMBNAIL, headers={"If-None-Match": first[1]["ETag"]})
        return first, again, conditional, (renders0, renders1, renders2, cache.renders)

    version, scored, (first, again, conditional, renders) = _one_version(live, requests)
    status, headers, body = first
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
    assert headers["ETag"] == f'"{version}"' and headers["Cache-Control"] == "no-cache"
    img = Image.open(io.BytesIO(body))
    img.verify()
    img = Image.open(io.BytesIO(body)).convert("RGB")
    w, h = img.size
    assert w == 480 and abs(h - 480 * 272 / 640) <= 1  # the original 640x272, not the model's square
    # the worst cell of this very frame is outlined in white: its top edge is brighter than the picture
    thumb_map = RegionMap(scored.region_map.values, h, w)
    x0, y0, x1, y1 = thumb_map.cell_box(*thumb_map.worst(1)[0][:2])
    a = np.asarray(img, dtype=np.float32)
    edge = a[y0 + 1, x0 + 3:x1 - 3].mean()
    assert edge > 200, edge
    # one render per scored frame: the same frame asked again is the same bytes, nothing drawn
    assert renders[1] - renders[0] <= 1 and renders[3] == renders[2] == renders[1], renders
    status2, headers2, body2 = again
    assert (status2, headers2["ETag"], body2) == (200, headers["ETag"], body)
    # a viewer holding this frame's ETag is told it has not changed: 304, no body
    status3, headers3, body3 = conditional
    assert (status3, headers3["ETag"], body3) == (304, headers["ETag"], b"")
    # an ETag of an older frame gets the current picture
    status4, headers4, body4 = get(live, THUMBNAIL, headers={"If-None-Match": f'"{version - 1}"'})
    assert status4 == 200 and body4[:3] == b"\xff\xd8\xff" and headers4["ETag"] != f'"{version - 1}"'


def test_page_and_assets(live):
    status, headers, body = get(live, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="static/app.js"' in body and not re.search(rb'(src|href)="(https?:)?//', body)  # nothing remote
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for path, ctype in (("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")):
        status, headers, asset = get(live, path)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(asset) > 500
    status, headers, body = get(live, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 500


def test_metrics_still_served(live):
    status, headers, body = get(live, "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'vqmon_stream_up{stream="clip"} 1.0' in text and 'vqmon_stream_up{stream="cam"} 0.0' in text
    assert 'vqmon_quality_score{stream="clip"}' in text


def test_health_and_readiness_of_a_working_monitor(live):
    assert get_json(live, "/healthz") == (200, {"status": "ok", "reasons": []})
    assert get_json(live, "/readyz") == (200, {"status": "ok", "reasons": []})


def test_no_credential_in_any_response(live):
    paths = ["/", "/static/app.js", "/static/app.css", "/api/streams", "/api/streams?history=300",
             "/api/streams/cam", "/api/streams/clip", "/api/streams/cam/thumbnail.jpg",
             "/api/streams/clip/thumbnail.jpg", "/healthz", "/readyz", "/metrics", "/nothing"]
    for path in paths:
        status, headers, body = get(live, path)
        assert SECRET.encode() not in body, path
        assert SECRET not in str(headers), path


def test_liveness_fails_when_scoring_or_housekeeping_stops(cpu_engine, monkeypatch):
    run = Running({"defaults": {"reconnect": FAST_RETRY}, "streams": [{"name": "cam", "url": CAMERA}]}, cpu_engine)
    m = run.monitor
    try:
        assert get_json(m, "/healthz") == (200, {"status": "ok", "reasons": []})
        # every assigned stream down: alive but not ready
        status, body = get_json(m, "/readyz")
        assert status == 503 and body["status"] == "fail"
        assert body["reasons"][0].startswith("no assigned stream is up (1 ")
        assert SECRET not in json.dumps(body)

        m.batcher.stop(timeout=5)
        status, body = get_json(m, "/healthz")
        assert status == 503 and body == {"status": "fail", "reasons": ["the scoring thread is not running"]}

        monkeypatch.setattr(service, "HEARTBEAT_MAX_AGE", 1.0)
        run.stop_loop()

        def housekeeping_reported():
            status, body = get_json(m, "/healthz")
            return (status, body) if len(body["reasons"]) > 1 else None

        status, body = wait_for(housekeeping_reported, 30, message="the stale housekeeping heartbeat reported")
        assert status == 503 and body["reasons"][1].startswith("the housekeeping loop last ran ")
    finally:
        run.close()


def test_ready_with_no_assigned_stream_and_shard_shown(cpu_engine):
    name = "elsewhere"
    other = 1 - owner(name, 2)  # the shard that does not own this stream
    run = Running({"shard": f"{other}/2", "streams": [{"name": name, "url": CAMERA}]}, cpu_engine)
    m = run.monitor
    try:
        assert m.streams == {}
        assert get_json(m, "/readyz") == (200, {"status": "ok", "reasons": []})
        _, data = get_json(m, "/api/streams")
        assert data["streams"] == []
        assert data["instance"]["shard"] == {"index": other, "count": 2, "assigned": 0, "configured": 1}
    finally:
        run.close()


def test_live_view_off_keeps_health_and_metrics(cpu_engine):
    run = Running({"streams": [{"name": "cam", "url": CAMERA}],
                   "metrics": {"listen": "127.0.0.1:0", "live_view": False}}, cpu_engine)
    m = run.monitor
    try:
        for path in ("/", "/static/app.js", "/api/streams", "/api/streams/cam", "/api/streams/cam/thumbnail.jpg"):
            status, body = get_json(m, path)
            assert status == 404 and "live_view" in body["error"], path
        assert get_json(m, "/healthz")[0] == 200
        assert get_json(m, "/readyz")[0] == 503
        status, _, body = get(m, "/metrics")
        assert status == 200 and b"vqmon_stream_up" in body
    finally:
        run.close()


def test_binds_loopback_by_default(cpu_engine):
    """A config that says nothing about the listener gets 127.0.0.1:9108; the monitor binds the
    default host (the port swapped for a free one, so a running vqmon cannot clash)."""
    cfg = config_from_dict({"streams": [{"name": "cam", "url": CAMERA}], "redis": {"enabled": False},
                            "console": False})
    assert cfg.metrics == MetricsConfig() and cfg.metrics.address == ("127.0.0.1", 9108)
    assert cfg.metrics.enabled and cfg.metrics.live_view
    default_host, _ = cfg.metrics.address
    cfg = cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"listen": f"{default_host}:0"})})
    m = Monitor(cfg, engines={"bifusion": cpu_engine}, announce=lambda text: None)
    m.start()
    try:
        host, port = m.metrics_address  # what the socket is bound to, as reported by the OS
        assert host == "127.0.0.1" and port > 0
        assert get_json(m, "/healthz")[0] == 200
    finally:
        m.stop()
