"""End-to-end monitor load and capacity: N looped file streams, decode -> score -> Redis.

    python bench/pipeline.py [--streams 4] [--rate 2] [--decode all] [--clip 1080p]      # load
    python bench/pipeline.py --capacity --rate 0.5 --decode keyframes [--overload]        # capacity
    python bench/pipeline.py --soak-minutes 10 --streams 40 --rate 0.5 --decode keyframes # soak

Runs the real service (one worker process per stream, paced at real time and looped, the
batching scorer, a private redis-server). Three modes:

- load (default): one run at ``--streams``; frames scored end to end and dropped per second
  (a stream's unscored frame replaced by a newer one: the scorer was behind), decode->Redis
  latency p50/p99, whether decoding kept real time, the workers' and the monitor's CPU and
  memory (RSS, PSS);
- ``--capacity``: the largest stream count with no drop, decode->Redis p99 under ``--max-p99``
  and every stream decoding at real time (``--min-realtime``), doubling from ``--start`` then
  bisecting, as streams per core; ``--overload`` adds one run at twice that;
- ``--soak-minutes``: ``--streams`` for that long, memory and rates every ``--soak-every``
  seconds, and the slope of the memory over the second half.

Load and capacity also measure, in the same run, decode-only capacity (one unpaced worker per
CPU, frames not scored: media seconds decoded per wall second = real-time streams) and
engine-only throughput (``engine.score`` on ready frames, before and after), both in streams at
``--rate``, and the ratio pipeline / min(decode-only, engine-only). Clips: pipeline_clips.py.
Re-runs itself under jemalloc when installed (docs/performance.md); ``VQMON_JEMALLOC=0``
turns that off.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines.backends import backend_names  # noqa: E402
from engines.models import list_models  # noqa: E402
from monitor.jemalloc import reexec_with_jemalloc  # noqa: E402
from pipeline_clips import CLIP_KINDS, clip_set, measure_gop, sample_frames  # noqa: E402
from pipeline_measure import PipelineRun, Setup, decode_only, engine_only  # noqa: E402
from procstats import slope  # noqa: E402

DECODE_MODES = ("all", "keyframes", "auto")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--clip", default="1080p", choices=CLIP_KINDS,
                    help="1080p: 1920x1080 25 fps H.264, key frame every 2 s (default); "
                    "mixed: 720p and 1080p streams alternating (the pre-issue-19 table)")
    ap.add_argument("--decode", default="all", choices=DECODE_MODES,
                    help="the streams' decode setting: every frame, key frames only, or auto")
    ap.add_argument("--streams", type=int, default=4, help="stream count (load and soak modes; default 4)")
    ap.add_argument("--rate", type=float, default=2.0, help="samples per second per stream (default 2)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="measured seconds per run, after the warm-up (default: 30; 20 per capacity step)")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds ignored at the start of every run (default 8)")
    ap.add_argument("--stagger", type=float, default=None,
                    help="spread the streams' starts over this many seconds, as cameras are not in step "
                    "(default: the clip's GOP; 0: all at once, every key frame decoded at the same time)")
    ap.add_argument("--engine-seconds", type=float, default=8.0,
                    help="engine-only measurement time (half before, half after the pipeline runs)")
    ap.add_argument("--decode-seconds", type=float, default=10.0,
                    help="decode-only measurement time (0 = skip it)")
    cap = ap.add_argument_group("capacity")
    cap.add_argument("--capacity", action="store_true", help="search the largest sustainable stream count")
    cap.add_argument("--start", type=int, default=4, help="first stream count tried")
    cap.add_argument("--max-streams", type=int, default=256, help="stop doubling here")
    cap.add_argument("--max-p99", type=float, default=2.0, help="decode->Redis p99 limit (s) of a sustainable run")
    cap.add_argument("--min-realtime", type=float, default=0.95,
                     help="least media seconds per wall second of every stream in a sustainable run "
                     "(below 1: decoding fell behind real time; default 0.95)")
    cap.add_argument("--overload", action="store_true", help="one more run at twice the capacity found")
    soak = ap.add_argument_group("soak")
    soak.add_argument("--soak-minutes", type=float, default=0.0, help="run --streams for this long (0 = no soak)")
    soak.add_argument("--soak-every", type=float, default=30.0, help="seconds between soak samples")
    eng = ap.add_argument_group("engine")
    eng.add_argument("--model", default="bifusion", choices=list_models(), help="quality model (default bifusion)")
    eng.add_argument("--backend", default="cpu", choices=backend_names(), help="inference backend (default cpu)")
    eng.add_argument("--max-batch", type=int, default=None,
                     help="the scorer's largest batch (default: the backend's choice, cpu 1 per batch side by side)")
    eng.add_argument("--parallel", type=int, default=None, help="cpu: batches scored at once (default one per core)")
    eng.add_argument("--threads", type=int, default=None, help="cpu: threads per batch (default: the backend's)")
    eng.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="cpu: model precision")
    eng.add_argument("--spin", action="store_true", help="cpu: ONNX Runtime's idle threads spin")
    eng.add_argument("--max-wait-ms", type=float, default=50.0,
                     help="how long the scorer waits to fill a batch (default 50)")
    ap.add_argument("--no-detectors", action="store_true", help="turn the picture detectors off")
    ap.add_argument("--nice", type=int, default=None, help="the decoder workers' nice value (default: the product's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress rows go to stderr)")
    args = ap.parse_args()
    if args.capacity and args.soak_minutes:
        ap.error("--capacity and --soak-minutes are separate runs")
    if args.overload and not args.capacity:
        ap.error("--overload needs --capacity")
    if args.seconds is None:
        args.seconds = 20.0 if args.capacity else 30.0
    return args


# ------------------------------------------------------------------------------------------
# text output
# ------------------------------------------------------------------------------------------
STEP_HEAD = ("streams  offered/s  sampled/s  scored/s  dropped/s  p50 ms  p99 ms  slowest  "
             "CPU workers/monitor  load  RSS/PSS per worker MB  decoding  verdict")


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"  # NaN: no record


def step_line(r: dict) -> str:
    m = r["memory"]
    return (f"{r['streams']:7d}  {r['offered_per_s']:9.1f}  {r['sampled_per_s']:9.2f}  {r['scored_per_s']:8.2f}  "
            f"{r['dropped_per_s']:9.2f}  {ms(r['latency_p50_s']):>6}  {ms(r['latency_p99_s']):>6}  "
            f"{r['realtime_min'] if r['realtime_min'] is not None else '-':>8}  "
            f"{r['workers_cpu_cores']:>9} / {r['monitor_cpu_cores']:<7}  {r['loadavg_1m']:4.1f}  "
            f"{m['worker_rss_mean_mb']!s:>10} / {m['worker_pss_mean_mb']!s:<10}  "
            f"{' '.join(f'{k}:{v}' for k, v in r['decoding'].items()):>8}  "
            f"{'ok' if r['passed'] else 'FAIL: ' + ', '.join(r['failed'])}")


def describe_clips(clips: list[dict]) -> str:
    return " / ".join(("" if len(clips) == 1 else f"{c['label']} ")
                      + f"{c['width']}x{c['height']} {c['fps']:g} fps {c['codec']} GOP "
                      + (f"{c['gop_s']:.2f} s ({c['gop_frames']} frames)" if c["gop_s"] else "> clip (1 key frame)")
                      for c in clips)


def print_memory_cpu(r: dict, indent: str = "  ") -> None:
    """The run's memory and CPU lines."""
    m, n = r["memory"], r["streams"]
    print(f"{indent}memory            : per worker RSS {m['worker_rss_mean_mb']} MB mean, "
          f"{m['worker_rss_max_mb']} max; PSS {m['worker_pss_mean_mb']} mean, {m['worker_pss_max_mb']} max; "
          f"all {m['workers']} workers RSS {m['workers_rss_mb']} MB, PSS {m['workers_pss_mb']} MB; "
          f"monitor RSS {m['monitor_rss_mb']} MB; redis-server RSS {m['redis_rss_mb']} MB")
    print(f"{indent}CPU (window)      : workers {r['workers_cpu_cores']} cores "
          f"({r['workers_cpu_cores'] / n:.3f}/stream), monitor {r['monitor_cpu_cores']}, "
          f"redis-server {r['redis_cpu_cores']}; load average {r['loadavg_1m']}")


def print_text(res: dict) -> None:
    s = res["setup"]
    print(f"pipeline: clip {s['clip']} ({describe_clips(res['clips'])}), decode {s['decode']}, {s['rate']:g} samples/s "
          f"per stream; model {s['model']} on {s['backend']}; {s['cpus']} CPUs; "
          f"jemalloc={'yes' if s['jemalloc'] else 'no'}; detectors {'on' if s['detectors'] else 'off'}")
    eng, dec = res.get("engine_only"), res.get("decode_only")
    if eng:
        before, after = eng["before_after"]
        print(f"  engine only       : {eng['per_s']:.2f} frames/s at batch {eng['batch']} = {eng['streams']:.1f} "
              f"streams at {s['rate']:g}/s (same process; {before:.2f} before, {after:.2f} after)")
    if dec:
        print(f"  decode only       : {dec['streams']:.1f} real-time streams from {dec['workers']} unpaced workers "
              f"({dec['cpu_cores']} cores busy: {dec['streams_per_core']} streams per busy core), clip {s['clip']}, "
              f"decode {s['decode']}")
    if "load" in res:
        r = res["load"]
        print(f"  load              : {r['streams']} streams x {s['rate']:g} = {r['offered_per_s']:g} offered/s over "
              f"{r['seconds']} s; sampled {r['sampled_per_s']}/s, real time x{r['realtime']} "
              f"(slowest stream x{r['realtime_min']})")
        print(f"  scored end to end : {r['scored_per_s']:.2f} frames/s  (written to Redis {r['written_per_s']:.2f}/s, "
              f"dropped as scorer-behind {r['dropped_per_s']:.2f}/s, mean batch {r['mean_batch']})")
        print(f"  decode -> Redis   : p50 {ms(r['latency_p50_s'])} ms, p99 {ms(r['latency_p99_s'])} ms "
              f"({r['records']} records)")
        print_memory_cpu(r)
        if r.get("ratio_to_engine") is not None:
            print(f"  scored / engine   : {r['ratio_to_engine']:.2f} of engine-only throughput")
    if "capacity" in res:
        c = res["capacity"]
        print(f"  capacity          : {c['streams']} streams = {c['streams_per_core']} streams per core with no drop, "
              f"p99 < {c['max_p99_s']:g} s, real time >= {c['min_realtime']:g}; saturated pipeline "
              + (f"{c['saturated_streams']} streams (best scored/s / rate of the steps that dropped)"
                 if c["saturated_streams"] else "not reached (no step dropped)"))
        if c.get("at_capacity"):
            print(f"  at {c['streams']} streams:")
            print_memory_cpu(c["at_capacity"], indent="    ")
    if res.get("overload"):
        o = res["overload"]
        print(f"  overload          : {o['streams']} streams: scored {o['scored_per_s']}/s = "
              f"{o['fraction_of_engine_only']} of engine-only, dropped {o['dropped_per_s']}/s, "
              f"p99 {ms(o['latency_p99_s'])} ms")
    if res.get("ratio"):
        q = res["ratio"]
        print(f"  ratio             : pipeline {q['pipeline_streams']} / min(decode-only {q['decode_only_streams']}, "
              f"engine-only {q['engine_only_streams']}) = {q['value']}"
              + ("" if q["saturated"] else " (not saturated: a lower bound)"))
    if "soak" in res:
        k = res["soak"]
        print(f"  soak              : {k['streams']} streams for {k['minutes']:g} min; RSS slope over the second half "
              f"(MB/min): total {k['slope_mb_per_min']['total_rss']}, workers {k['slope_mb_per_min']['workers_rss']}, "
              f"monitor {k['slope_mb_per_min']['monitor_rss']}, redis-server {k['slope_mb_per_min']['redis_rss']} "
              f"(redis keeps up to 100000 records per stream)")


# ------------------------------------------------------------------------------------------
# modes
# ------------------------------------------------------------------------------------------
class Bench:
    """The pipeline runs of one invocation, sharing the engine; progress rows as they come."""

    def __init__(self, args: argparse.Namespace, setup: Setup, engine):
        self.args, self.setup, self.engine = args, setup, engine
        self.progress = sys.stderr if args.json else sys.stdout
        self.head_said = False

    def say(self, text: str) -> None:
        print(text, file=self.progress, flush=True)

    def run(self, n: int) -> dict:
        """One pipeline run at ``n`` streams: rates over ``--seconds`` after the warm-up, memory at the end."""
        a = self.args
        with PipelineRun(self.engine, self.setup, n, a.warmup, a.stagger) as run:
            m0 = run.mark()
            time.sleep(a.seconds)
            row = run.window(m0, run.mark())
            row["memory"] = run.memory()
        row["offered_per_s"] = n * a.rate
        failed = []
        if row["dropped"]:
            failed.append(f"{row['dropped']} dropped")
        if not row["latency_p99_s"] < a.max_p99:  # NaN (no record) fails too
            failed.append(f"p99 {ms(row['latency_p99_s'])} ms")
        if row["realtime_min"] is None or row["realtime_min"] < a.min_realtime:
            failed.append(f"real time x{row['realtime_min']}")
        if row["streams_scored"] < n:
            failed.append(f"{row['streams_scored']} of {n} streams scored")
        row["passed"], row["failed"] = not failed, failed
        if not self.head_said:
            self.head_said = True
            self.say(STEP_HEAD)
        self.say(step_line(row))
        return row

    def step(self, n: int, steps: list[dict]) -> bool:
        steps.append(row := self.run(n))
        return row["passed"]

    def capacity(self) -> dict:
        """Double from --start while runs pass, then bisect between the last pass and the first failure."""
        a, steps = self.args, []
        good, bad, n = 0, None, max(1, a.start)
        while bad is None and good < a.max_streams:
            if self.step(n, steps):
                good, n = n, min(2 * n, a.max_streams)
            else:
                bad = n
        while bad is not None and bad - good > 1:
            n = (good + bad) // 2
            if self.step(n, steps):
                good = n
            else:
                bad = n
        failed = [r for r in steps if not r["passed"] and r["dropped"]]
        return {"streams": good, "streams_per_core": round(good / os.cpu_count(), 2),
                "max_p99_s": a.max_p99, "min_realtime": a.min_realtime,
                "saturated_streams": round(max(r["scored_per_s"] for r in failed) / a.rate, 1) if failed else None,
                "at_capacity": next((r for r in steps if r["streams"] == good and r["passed"]), None),
                "steps": steps}

    def soak(self) -> dict:
        a, rows = self.args, []
        self.say("minute  scored/s  dropped/s  p99 ms  workers RSS/PSS MB  monitor RSS MB  redis RSS MB")
        with PipelineRun(self.engine, self.setup, a.streams, a.warmup, a.stagger) as run:
            m, t0 = run.mark(), time.monotonic()
            end = t0 + a.soak_minutes * 60
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(a.soak_every, left))
                b = run.mark()
                w, mem = run.window(m, b), run.memory()
                rows.append({"minute": round((b.t - t0) / 60, 2), "scored_per_s": w["scored_per_s"],
                             "dropped_per_s": w["dropped_per_s"], "latency_p99_s": w["latency_p99_s"],
                             **{k: mem[k] for k in ("workers_rss_mb", "workers_pss_mb", "monitor_rss_mb",
                                                    "redis_rss_mb")}})
                r = rows[-1]
                self.say(f"{r['minute']:6.2f}  {r['scored_per_s']:8.2f}  {r['dropped_per_s']:9.2f}  "
                         f"{ms(r['latency_p99_s']):>6}  {r['workers_rss_mb']:8.1f} / {r['workers_pss_mb']:<8.1f}  "
                         f"{r['monitor_rss_mb']:14}  {r['redis_rss_mb']!s:>12}")
                m = b
        half = rows[len(rows) // 2:]
        xs = [r["minute"] for r in half]

        def trend(values: list[float | None]) -> float | None:
            if any(v is None for v in values):
                return None
            s = slope(xs, values)
            return None if s is None else round(s, 2)
        return {"streams": a.streams, "minutes": a.soak_minutes, "every_s": a.soak_every, "rows": rows,
                "slope_mb_per_min": {
                    "total_rss": trend([r["workers_rss_mb"] + r["monitor_rss_mb"] for r in half]),
                    "workers_rss": trend([r["workers_rss_mb"] for r in half]),
                    "workers_pss": trend([r["workers_pss_mb"] for r in half]),
                    "monitor_rss": trend([r["monitor_rss_mb"] for r in half]),
                    "redis_rss": trend([r["redis_rss_mb"] for r in half])}}


def main() -> None:
    args = parse_args()
    reexec_with_jemalloc([str(Path(__file__).resolve()), *sys.argv[1:]])

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from engines.engine import QualityEngine

    clips = clip_set(args.clip)
    setup = Setup(clips=clips, rate=args.rate, decode=args.decode, model=args.model, backend=args.backend,
                  max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, detectors=not args.no_detectors, nice=args.nice)
    from engines.backends import options_class
    cpu = {"parallel": args.parallel, "threads": args.threads, "precision": args.precision, "spin": args.spin}
    options = options_class(args.backend)(**(cpu if args.backend == "cpu" else {}))
    # as the monitor builds it: for its scoring threads
    engine = QualityEngine(model=args.model, backend=options.for_many_callers(), max_batch=args.max_batch)
    bench = Bench(args, setup, engine)
    res: dict = {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "setup": {"clip": args.clip, "decode": args.decode, "rate": args.rate, "model": args.model,
                  "backend": engine.info.get("backend_detail"), "max_batch": engine.max_batch,
                  "max_wait_ms": args.max_wait_ms, "detectors": not args.no_detectors, "nice": args.nice,
                  "jemalloc": "jemalloc" in os.environ.get("LD_PRELOAD", ""), "cpus": os.cpu_count(),
                  "cpu": platform.processor() or platform.machine(), "seconds": args.seconds, "warmup": args.warmup},
        "clips": [{"label": label, **measure_gop(path)} for label, path in clips],
    }
    if args.stagger is None:
        args.stagger = max((c["gop_s"] or 0.0 for c in res["clips"]), default=0.0)
    res["setup"]["stagger"] = args.stagger
    if args.soak_minutes:
        res["soak"] = bench.soak()
    else:
        # a saturated scorer batches as many as it may; a load run below that, at most one per stream
        batch = max(1, min(engine.max_batch, args.max_streams if args.capacity else args.streams))
        frames = sample_frames(clips[0][1], engine.view)
        eng_before = engine_only(engine, frames, batch, args.engine_seconds / 2)
        if args.decode_seconds > 0:
            res["decode_only"] = decode_only(setup, engine.view, os.cpu_count(), args.decode_seconds)
        if args.capacity:
            res["capacity"] = bench.capacity()
            if args.overload:
                res["overload"] = bench.run(max(2, 2 * res["capacity"]["streams"]))
        else:
            res["load"] = bench.run(args.streams)
        eng_after = engine_only(engine, frames, batch, args.engine_seconds / 2)
        eng_fps = (eng_before + eng_after) / 2
        res["engine_only"] = {"per_s": round(eng_fps, 2), "batch": batch, "streams": round(eng_fps / args.rate, 1),
                              "before_after": [round(eng_before, 2), round(eng_after, 2)]}
        add_ratios(res, eng_fps, args.rate)
    if args.json:
        print(json.dumps(res))
    else:
        print_text(res)


def add_ratios(res: dict, eng_fps: float, rate: float) -> None:
    """pipeline / min(decode-only, engine-only), in streams; the scorer's share under overload."""
    if "load" in res:
        r = res["load"]
        r["ratio_to_engine"] = round(r["scored_per_s"] / eng_fps, 3) if eng_fps else None
        saturated = r["dropped"] > 0
        pipeline = r["scored_per_s"] / rate if saturated else r["streams"]
    else:
        c = res["capacity"]
        # the search stopped at a failing step, not at --max-streams
        saturated, pipeline = any(not r["passed"] for r in c["steps"]), c["streams"]
    if res.get("overload"):
        o = res["overload"]
        o["fraction_of_engine_only"] = round(o["scored_per_s"] / eng_fps, 3) if eng_fps else None
    dec = res.get("decode_only", {}).get("streams")
    bound = min(res["engine_only"]["streams"], dec) if dec else res["engine_only"]["streams"]
    res["ratio"] = {"pipeline_streams": round(pipeline, 1), "decode_only_streams": dec,
                    "engine_only_streams": res["engine_only"]["streams"], "saturated": saturated,
                    "value": round(pipeline / bound, 3) if bound else None}


if __name__ == "__main__":
    main()
