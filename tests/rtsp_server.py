"""A small RTSP server for tests: serves an H.264 mp4 without re-encoding, looped.

Run it with Debian's Python, which has GStreamer's introspection bindings (a venv Python
does not): ``/usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4``. It needs
``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad``.

The clip's access units are read once (``filesrc ! qtdemux ! h264parse ! appsink``) and fed
to each client's pipeline (``appsrc ! h264parse ! rtph264pay``) over and over with timestamps
that keep increasing, so the stream never ends (``--once``: it ends at the end of the clip).
The server paces the stream at real time. ``READY <port>`` on stdout when it accepts clients.
"""
from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def read_access_units(path: str):
    pipe = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false")
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    units, caps = [], None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        buf = sample.get_buffer()
        caps = caps or sample.get_caps()
        ok, info = buf.map(Gst.MapFlags.READ)
        if ok:
            units.append((bytes(info.data), buf.pts, buf.dts, buf.duration,
                          bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)))
            buf.unmap(info)
    pipe.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"no H.264 access units in {path}")
    last = units[-1]
    step = last[3] if last[3] != Gst.CLOCK_TIME_NONE else Gst.SECOND // 25
    duration = max(u[1] for u in units) + step
    return units, caps, duration


class Feeder:
    def __init__(self, appsrc, units, duration, loop: bool):
        self.units, self.duration, self.loop = units, duration, loop
        self.i = 0
        self.round = 0
        appsrc.connect("need-data", self.need_data)

    def need_data(self, src, _length):
        for _ in range(8):
            if self.i >= len(self.units):
                if not self.loop:
                    src.emit("end-of-stream")
                    return
                self.i = 0
                self.round += 1
            data, pts, dts, dur, delta = self.units[self.i]
            self.i += 1
            off = self.round * self.duration
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = pts + off
            buf.dts = dts + off if dts != Gst.CLOCK_TIME_NONE else Gst.CLOCK_TIME_NONE
            buf.duration = dur
            if delta:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            src.emit("push-buffer", buf)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--mount", default="/test")
    ap.add_argument("--once", action="store_true", help="end the stream at the end of the clip")
    args = ap.parse_args()
    Gst.init(None)
    units, caps, duration = read_access_units(args.file)

    def configure(_factory, media):
        src = media.get_element().get_by_name("src")
        src.set_property("caps", caps)
        media.feeder = Feeder(src, units, duration, loop=not args.once)  # keep a reference

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( appsrc name=src format=time is-live=false ! h264parse "
                       "! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(args.mount, factory)
    if not server.attach(None):
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
