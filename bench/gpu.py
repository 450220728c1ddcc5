"""GPU throughput and latency of the quality models, and streams per GPU.

    python bench/gpu.py [--batches 1 8 32] [--models bifusion glint] [--out results.json]
        [--clip path.mp4 ...]

For each model and batch size: fp32 eager, fp16 eager, fp16 torch.compile, fp16 CUDA graphs
(the ``cuda`` backend) and TensorRT (the ``tensorrt`` backend, where torch-tensorrt imports):
images/s and median / p99 latency per batch. With ``--clip`` (needs PyAV), measures decode +
swscale resize throughput on this machine's CPU cores and derives how many 2-samples/s streams
one GPU (and this host's decoders) can carry.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile  # noqa: E402

from engines import create_model  # noqa: E402
from engines.backends import BackendUnavailable, create_backend  # noqa: E402


def time_cuda(fn, warmup: int = 3, iters: int = 30) -> list[float]:
    """Per-call latencies in ms, each synchronised (what a caller waits for)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def summarize(lat_ms: list[float], batch: int) -> dict:
    med = percentile(lat_ms, 50)
    return {"batch": batch, "latency_ms_p50": med, "latency_ms_p99": percentile(lat_ms, 99),
            "images_per_s": batch / (med / 1e3)}


def bench_model(name: str, batches: list[int], size: int) -> list[dict]:
    rows = []
    base = create_model(name, weights="default")
    for b in batches:
        x_cpu = torch.randn(b, 3, size, size)
        variants = {}
        m32 = create_model(name, weights="default").cuda().eval()
        x32 = x_cpu.cuda()
        variants["fp32 eager"] = lambda: m32(x32)
        m16 = create_model(name, weights="default").cuda().half().eval()
        x16 = x32.half()
        variants["fp16 eager"] = lambda: m16(x16)
        # default mode: max-autotune took > 6 min on an H100 (2026-11-23) for little gain at these sizes
        c16 = torch.compile(m16, dynamic=False)
        variants["fp16 compiled"] = lambda: c16(x16)
        for label, fn in variants.items():
            try:
                with torch.inference_mode():
                    rows.append({"model": name, "variant": label, **summarize(time_cuda(fn), b)})
            except Exception as e:  # noqa: BLE001 — a failing variant is reported, others go on
                rows.append({"model": name, "variant": label, "batch": b, "error": f"{type(e).__name__}: {e}"[:300]})
        # the product's backends, end to end from a CPU float batch (includes H2D/D2H copies)
        for backend_name, label in (("cuda", "fp16 cudagraphs (cuda backend)"), ("tensorrt", "tensorrt fp16")):
            try:
                t0 = time.perf_counter()
                be = create_backend(backend_name, base, max_batch=max(b, 1))
                be.infer(x_cpu)
                build_s = time.perf_counter() - t0
                rows.append({"model": name, "variant": label, "build_s": build_s,
                             "detail": be.describe(), **summarize(time_cuda(lambda: be.infer(x_cpu)), b)})
            except BackendUnavailable as e:
                rows.append({"model": name, "variant": label, "batch": b, "unavailable": str(e)[:300]})
            except Exception as e:  # noqa: BLE001
                rows.append({"model": name, "variant": label, "batch": b, "error": f"{type(e).__name__}: {e}"[:300]})
        print(json.dumps(rows[-5:]), flush=True)
    return rows


def _decode_worker(args) -> tuple[int, float]:
    clip, size, seconds = args
    import av

    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with av.open(clip) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for frame in c.decode(s):
                n += 1
                if n % 12 == 0:  # a 2 samples/s sample out of 24-30 fps
                    frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
                if time.perf_counter() - start >= seconds:
                    break
    return n, time.perf_counter() - start


def bench_decode(clip: str, size: int, procs: int, seconds: float = 5.0) -> dict:
    with mp.get_context("spawn").Pool(procs) as pool:
        res = pool.map(_decode_worker, [(clip, size, seconds)] * procs)
    fps = sum(n / t for n, t in res)
    return {"clip": Path(clip).name, "processes": procs, "decoded_fps_total": fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--models", nargs="+", default=["bifusion", "glint"])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--clip", nargs="*", default=[])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "rows": [], "decode": []}
    try:
        import tensorrt
        report["tensorrt"] = tensorrt.__version__
    except Exception as e:  # noqa: BLE001
        report["tensorrt"] = f"not importable: {type(e).__name__}: {e}"[:200]
    for name in args.models:
        report["rows"] += bench_model(name, args.batches, args.size)
        if args.out:  # keep what was measured even if a later step runs out of time
            Path(args.out).write_text(json.dumps(report, indent=1))
    for clip in args.clip:
        for procs in (1, os.cpu_count() or 1):
            report["decode"].append(bench_decode(clip, args.size, procs))
            print(json.dumps(report["decode"][-1]), flush=True)
    best = max((r["images_per_s"] for r in report["rows"] if "images_per_s" in r), default=0)
    report["streams_per_gpu_at_2fps"] = best / 2
    if report["decode"]:
        full = [d for d in report["decode"] if d["processes"] > 1] or report["decode"]
        # each stream decodes every frame of its ~25 fps feed even if only 2/s are scored
        report["streams_per_host_decode_at_25fps"] = full[-1]["decoded_fps_total"] / 25
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
