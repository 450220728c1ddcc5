"""End-to-end monitor throughput: N looped 720p/1080p file streams, decode -> score -> Redis.

    python bench/pipeline.py [--streams 4] [--rate 2] [--seconds 30] [--warmup 8] [--backend cpu]

Runs the real service (one worker process per stream, paced at real time and looped, the
batching scorer, a private redis-server) and reports, after a warm-up:

- frames scored per second end to end (what reached Redis), and sampled frames dropped
  because the scorer was behind;
- decode-to-Redis latency p50/p99 (frame decoded in the worker -> record acknowledged by Redis);
- engine-only throughput measured in the same process on the same frames and batch size,
  and the ratio pipeline / engine-only (1.0 = the pipeline adds no overhead once the scorer is
  saturated; below 1 when the offered load N x rate is under the engine's capacity).

Streams alternate between the shipped 720p sample and a 1080p clip (the 720p one scaled up and
encoded once with PyAV into a temporary file). Re-runs itself under jemalloc when installed
(docs/performance.md); ``VQMON_JEMALLOC=0`` turns that off.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile  # noqa: E402
from engines.backends import backend_names  # noqa: E402
from engines.models import list_models  # noqa: E402
from monitor.jemalloc import reexec_with_jemalloc  # noqa: E402

SAMPLE_720P = ROOT / "monitor" / "samples" / "bigbuckbunny.mp4"


def make_1080p(src: Path, dst: Path, seconds: float = 5.0) -> Path:
    """Scale a clip to 1920x1080 and encode it as H.264 (libx264, else the native encoder)."""
    import av
    if dst.exists():
        return dst
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or 25
        codec = "libx264"
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            codec = "h264"
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = 1920, 1080, "yuv420p"
        vs.bit_rate = 6_000_000
        if codec == "libx264":
            vs.options = {"preset": "veryfast", "g": "50"}
        for i, frame in enumerate(inp.decode(vin)):
            if frame.time is not None and frame.time > seconds:
                break
            f = frame.reformat(width=1920, height=1080, format="yuv420p")
            f.pts = i
            f.time_base = Fraction(1) / Fraction(rate)
            for pkt in vs.encode(f):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    tmp.rename(dst)
    return dst


def engine_only(engine, frames, batch: int, seconds: float) -> float:
    """Frames/s of engine.score on ready SxS frames at ``batch``."""
    engine.score(frames[:batch])  # warm-up
    n, t0 = 0, time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        chunk = [frames[(i + k) % len(frames)] for k in range(batch)]
        engine.score(chunk)
        n += batch
        i += batch
    return n / (time.perf_counter() - t0)


def sample_frames(path: Path, view, count: int = 16):
    import av

    from monitor.media import model_input
    out = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % 8 == 0:
                out.append(model_input(frame, view))
            if len(out) >= count:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4, help="number of file streams (720p and 1080p alternate)")
    ap.add_argument("--rate", type=float, default=2.0, help="samples per second per stream")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds (after the warm-up)")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds ignored at the start")
    ap.add_argument("--engine-seconds", type=float, default=8.0, help="engine-only measurement time")
    ap.add_argument("--model", default="bifusion", choices=list_models())
    ap.add_argument("--backend", default="cpu", choices=backend_names())
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=50.0)
    ap.add_argument("--no-detectors", action="store_true", help="turn the picture detectors off")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    reexec_with_jemalloc([str(Path(__file__).resolve()), *sys.argv[1:]])

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from engines.engine import QualityEngine
    from monitor.config import config_from_dict
    from monitor.service import Monitor

    tmp = Path(tempfile.gettempdir()) / "vqmon-bench-v2"
    tmp.mkdir(exist_ok=True)
    clip_1080 = make_1080p(SAMPLE_720P, tmp / "bbb-1080p.mp4")
    clips = [SAMPLE_720P, clip_1080]
    engine = QualityEngine(model=args.model, backend=args.backend, max_batch=args.max_batch)
    batch = max(1, min(args.max_batch, engine.max_batch, args.streams))

    frames = sample_frames(SAMPLE_720P, engine.view)
    eng_fps_before = engine_only(engine, frames, batch, args.engine_seconds / 2)

    streams = [{"name": f"s{i}-{'1080p' if i % 2 else '720p'}", "url": str(clips[i % 2]), "loop": True}
               for i in range(args.streams)]
    cfg = config_from_dict({
        "defaults": {"sample_rate": args.rate, "model": args.model,
                     "detectors": {"enabled": not args.no_detectors}},
        "streams": streams,
        "engine": {"backend": args.backend, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "metrics": {"enabled": False}, "console": False,
        "redis": {"maxlen": 100_000},
    })
    mon = Monitor(cfg, engines={args.model: engine}, announce=lambda text: None)
    mon.start()
    redis_writer = next(s for s in mon.sinks if s.name == "redis").writer
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(rt.scored for rt in mon.streams.values()):
            time.sleep(0.2)
        time.sleep(max(0.0, args.warmup))
        scored0 = sum(rt.scored for rt in mon.streams.values())
        dropped0 = sum(rt.dropped for rt in mon.streams.values())
        written0 = redis_writer.stats.written
        lat0 = len(redis_writer.stats.latencies)
        batches0 = mon.batcher.batches
        t0 = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        scored = sum(rt.scored for rt in mon.streams.values()) - scored0
        dropped = sum(rt.dropped for rt in mon.streams.values()) - dropped0
        written = redis_writer.stats.written - written0
        lats = list(redis_writer.stats.latencies)[lat0:]
        batches = mon.batcher.batches - batches0
        states = {n: rt.state for n, rt in mon.streams.items()}
        decode_fps = {n: round(rt.fps, 1) for n, rt in mon.streams.items()}
    finally:
        mon.stop()
    eng_fps_after = engine_only(engine, frames, batch, args.engine_seconds / 2)
    eng_fps = (eng_fps_before + eng_fps_after) / 2
    result = {
        "streams": args.streams, "rate_per_stream": args.rate, "offered_per_s": args.streams * args.rate,
        "seconds": round(elapsed, 1), "model": args.model, "backend": engine.info.get("backend_detail"),
        "scored_per_s": round(scored / elapsed, 2), "written_per_s": round(written / elapsed, 2),
        "dropped_per_s": round(dropped / elapsed, 2), "mean_batch": round(scored / batches, 2) if batches else None,
        "latency_p50_s": round(percentile(lats, 50), 3), "latency_p99_s": round(percentile(lats, 99), 3),
        "engine_only_per_s": round(eng_fps, 2), "engine_batch": batch,
        "engine_only_before_after": [round(eng_fps_before, 2), round(eng_fps_after, 2)],
        "ratio_to_engine": round((scored / elapsed) / eng_fps, 3) if eng_fps else None,
        "detectors": not args.no_detectors, "jemalloc": "jemalloc" in os.environ.get("LD_PRELOAD", ""), "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "states": states, "decode_fps": decode_fps,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"pipeline: {args.streams} looped file streams (720p/1080p alternating) x {args.rate:g} samples/s "
          f"= {result['offered_per_s']:g} offered/s; model {args.model} on {result['backend']}; "
          f"{os.cpu_count()} CPUs; jemalloc={'yes' if result['jemalloc'] else 'no'}; "
          f"detectors {'on' if result['detectors'] else 'off'}")
    print(f"  scored end to end : {result['scored_per_s']:.2f} frames/s  (written to Redis {result['written_per_s']:.2f}/s, "
          f"dropped as scorer-behind {result['dropped_per_s']:.2f}/s, mean batch {result['mean_batch']})")
    print(f"  decode -> Redis   : p50 {result['latency_p50_s'] * 1000:.0f} ms, p99 {result['latency_p99_s'] * 1000:.0f} ms "
          f"({len(lats)} records)")
    print(f"  engine only       : {result['engine_only_per_s']:.2f} frames/s at batch {batch} (same process; "
          f"{eng_fps_before:.2f} before, {eng_fps_after:.2f} after the pipeline run)")
    print(f"  ratio             : {result['ratio_to_engine']:.2f} of engine-only throughput")
    print(f"  decoded fps/stream: {decode_fps}")


if __name__ == "__main__":
    main()
