"""Other protocols FFmpeg opens: HLS over HTTP and MPEG-TS over UDP, from servers on loopback;
and a UDP stream that goes silent after frames have flowed: stale, then up again."""
from __future__ import annotations

import functools
import http.server
import threading
import time

import av

from conftest import wait_for
from monitor.redis_server import free_port


def _make_hls(src, out_dir) -> None:
    """Remux a clip into a VOD HLS playlist (2 s segments), no re-encoding."""
    with av.open(str(src)) as inp, av.open(str(out_dir / "index.m3u8"), "w", format="hls",
                                          options={"hls_time": "2", "hls_playlist_type": "vod",
                                                   "hls_segment_filename": str(out_dir / "seg%03d.ts")}) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for pkt in inp.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            out.mux(pkt)


def test_hls_over_http(redis_server, monitor_factory, samples, tmp_path, waiter):
    _make_hls(samples / "bikes.mp4", tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.m3u8"
        m = monitor_factory({
            # a VOD playlist: pace it at real time like a file
            "streams": [{"name": "hls", "url": url, "sample_rate": 2.0, "pace": True}],
            "redis": {"url": redis_server.url},
        })
        r = redis_server.client()
        waiter(lambda: r.xlen("vqmon:hls:records") >= 4, 30, message="records from HLS")
        entries = r.xrange("vqmon:hls:records")
        assert entries[0][1][b"frame_size"] == b"640,272"
        pts = [float(f[b"pts"]) for _, f in entries]
        assert pts == sorted(pts) and pts[-1] - pts[0] >= 1.0
        assert m.streams["hls"].info.get("codec") == "h264"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` here (Linux: /proc/net/udp and udp6)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in f):
                    return True
        except FileNotFoundError:
            continue
    return False


def _udp_sender(src, port: int, stop: threading.Event) -> None:
    """Send a clip once as MPEG-TS over UDP, at real time."""
    with av.open(str(src)) as inp, av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", "w", format="mpegts") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        t0 = time.monotonic()
        for pkt in inp.demux(vin):
            if stop.is_set():
                break
            if pkt.dts is None:
                continue
            delay = t0 + float(pkt.dts * vin.time_base) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pkt.stream = vout
            out.mux(pkt)


def test_mpegts_over_udp(redis_server, monitor_factory, samples, waiter):
    port = free_port()
    m = monitor_factory({
        "streams": [{"name": "udp", "url": f"udp://127.0.0.1:{port}", "sample_rate": 2.0,
                     "timeouts": {"open": 5, "read": 3}}],
        "redis": {"url": redis_server.url},
    })
    stop = threading.Event()
    wait_for(lambda: _udp_bound(port), 30, interval=0.05, message="the worker listening on the UDP port")
    sender = threading.Thread(target=_udp_sender, args=(samples / "bikes.mp4", port, stop), daemon=True)
    sender.start()
    try:
        r = redis_server.client()
        waiter(lambda: r.xlen("vqmon:udp:records") >= 4, 30, message="records from UDP")
        assert r.xrange("vqmon:udp:records")[0][1][b"frame_size"] == b"640,272"
        assert m.metrics.registry.get_sample_value("vqmon_stream_up", {"stream": "udp"}) == 1
    finally:
        stop.set()
        sender.join(5)


def test_udp_stream_goes_stale_when_frames_stop_and_recovers(redis_server, monitor_factory, samples):
    """Frames flow, then the sender falls silent (no error: UDP has no connection): after
    ``timeouts.stale`` without a decoded frame the stream is down, ``stale``, with the reason;
    frames again and it is up again."""
    port = free_port()
    m = monitor_factory({
        "streams": [{"name": "udp", "url": f"udp://127.0.0.1:{port}", "sample_rate": 2.0,
                     "timeouts": {"open": 30, "read": 60, "stale": 1.5, "hang": 120}}],
        "redis": {"url": redis_server.url},
    })
    r = redis_server.client()
    up = lambda: m.metrics.registry.get_sample_value("vqmon_stream_up", {"stream": "udp"})  # noqa: E731

    def send() -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        t = threading.Thread(target=_udp_sender, args=(samples / "bikes.mp4", port, stop), daemon=True)
        t.start()
        return stop, t

    wait_for(lambda: _udp_bound(port), 30, interval=0.05, message="the worker listening on the UDP port")
    stop, sender = send()
    try:
        wait_for(lambda: r.xlen("vqmon:udp:records") >= 2 and up() == 1, 30, message="records from UDP")
    finally:
        stop.set()
        sender.join(10)
    rt = m.streams["udp"]
    wait_for(lambda: rt.state == "stale", 30, message="the silent stream marked stale")
    assert up() == 0 and rt.reconnects == 0  # the same worker, still listening
    assert rt.error.startswith("no frame decoded for ")
    wait_for(lambda: r.hget("vqmon:udp:state", "state") == b"stale", 10, message="stale in the state hash")
    assert r.hget("vqmon:udp:state", "up") == b"0"
    downs = [f for _, f in r.xrange("vqmon:events") if f[b"condition"] == b"stream_down"]
    assert [d[b"kind"] for d in downs] == [b"start"] and b"no frame decoded" in downs[0][b"message"]

    n_stale = r.xlen("vqmon:udp:records")
    stop, sender = send()
    try:
        wait_for(lambda: up() == 1 and r.xlen("vqmon:udp:records") > n_stale, 30, message="up again on new frames")
    finally:
        stop.set()
        sender.join(10)
    assert rt.state == "up"
    wait_for(lambda: any(f[b"condition"] == b"stream_down" and f[b"kind"] == b"resolved"
                         for _, f in r.xrange("vqmon:events")), 10, message="the stream_down event resolved")
