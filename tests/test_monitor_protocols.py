"""Other protocols FFmpeg opens: HLS over HTTP and MPEG-TS over UDP, from servers on loopback."""
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
        assert m.streams["hls"].worker.info.get("codec") == "h264"
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
