"""GPU throughput and latency of the quality models, and streams per GPU including decode.

    python bench/gpu.py [--batches 1 8 32] [--models bifusion glint] [--out results.json]
        [--clip monitor/samples/bigbuckbunny.mp4] [--budget-s 300] [--device cpu]

1. ``decode`` (with ``--clip``, needs PyAV): frames/s decoding the clip in 1 and N processes
   the way the monitor's workers do (every frame decoded, 2 samples/s swscale'd to the model
   size), with the decoder ``auto`` picks: NVDEC (cuvid) where it opens, else software; the
   decoder and the fallback reason are reported.
2. ``preprocess``: per model, the ``cuda`` backend at the largest batch fed uint8 frames,
   384x384 (what the workers send) and 1920x1080, through the host path (CPU resize, float32
   upload, ``prepare_batch``) and the device path (pinned uint8 upload, GPU resize,
   ``DeviceBatcher``, what ``QualityEngine`` uses on CUDA): images/s end to end.
3. ``rows``: per model and batch, fp32 eager, fp16 eager, fp16 ``torch.compile``, the ``cuda``
   backend (fp16, CUDA graphs) and the ``tensorrt`` backend where torch-tensorrt imports
   ("unavailable" with the reason where not): images/s, p50/p99 latency per batch.
4. ``streams_per_gpu_at_2fps``: the model side (device-path images/s / 2) and the decode side
   (decoded frames/s / the clip's fps), and which of the two limits.

Compiling costs 20-40 s per model and batch: measurements that would start after
``--budget-s`` are recorded as skipped, so a run ends within a GPU session (sections 1-2 come
first). ``--device cpu`` runs the same code on the CPU (eager fp32 and the ``cpu`` backend,
few iterations) to check the script before spending GPU time; its numbers are not GPU numbers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile  # noqa: E402

from engines import create_model, list_models  # noqa: E402
from engines.backends import BackendUnavailable, create_backend  # noqa: E402
from engines.preprocess import DeviceBatcher, prepare_batch  # noqa: E402


class Bench:
    def __init__(self, device: str, iters: int, budget_s: float):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.iters = iters
        self.deadline = time.monotonic() + budget_s

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn, warmup: int = 3) -> list[float]:
        """Per-call latencies in ms, each synchronised (what a caller waits for)."""
        for _ in range(warmup):
            fn()
        self.sync()
        out = []
        for _ in range(self.iters):
            t = time.perf_counter()
            fn()
            self.sync()
            out.append((time.perf_counter() - t) * 1e3)
        return out

    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline


def summarize(lat_ms: list[float], batch: int) -> dict:
    med = percentile(lat_ms, 50)
    return {"batch": batch, "latency_ms_p50": med, "latency_ms_p99": percentile(lat_ms, 99),
            "images_per_s": batch / (med / 1e3)}


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def product_backend(model, batch: int, bench: Bench):
    """The backend ``QualityEngine`` would run on this device: ``cuda`` on a GPU, ``cpu`` in a dry run."""
    return create_backend("cuda" if bench.cuda else "cpu", model, max_batch=batch)


def bench_preprocess(name: str, batch: int, bench: Bench) -> list[dict]:
    """Host vs device preprocessing, end to end through the product's backend, from uint8 frames."""
    rows = []
    t0 = time.perf_counter()
    backend = product_backend(create_model(name, weights="default"), batch, bench)
    size = backend.input_size
    device_path = DeviceBatcher(bench.device, size)
    backend.infer(device_path([np.zeros((size, size, 3), np.uint8)] * batch))  # compile / warm
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    for label, (h, w) in (("model size (workers' frames)", (size, size)), ("1920x1080", (1080, 1920))):
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
        for path, prep in (("host: cpu resize, float32 upload", lambda f: prepare_batch(f, size)),
                           ("device: pinned uint8 upload, resize on device", device_path)):
            row = {"model": name, "frames": label, "path": path, "backend": backend.describe(),
                   "build_s": round(build_s, 1)}
            try:
                prep_ms = bench.time(lambda: prep(frames), warmup=1)
                lat = bench.time(lambda: backend.infer(prep(frames)), warmup=1)
                rows.append({**row, "preprocess_ms_p50": percentile(prep_ms, 50),
                             "preprocess_ms_min": min(prep_ms), **summarize(lat, batch)})
            except Exception as e:  # noqa: BLE001 — a failing path is reported, others go on
                rows.append({**row, "error": _error(e)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_model(name: str, batches: list[int], size: int, bench: Bench) -> list[dict]:
    rows = []
    base = create_model(name, weights="default")
    for b in batches:
        if bench.over_budget():
            rows.append({"model": name, "batch": b, "skipped": "time budget spent"})
            continue
        x_cpu = torch.randn(b, 3, size, size)
        variants = {}
        m32 = create_model(name, weights="default").to(bench.device).eval()
        x32 = x_cpu.to(bench.device)
        variants["fp32 eager"] = lambda: m32(x32)
        if bench.cuda:
            m16 = create_model(name, weights="default").cuda().half().eval()
            x16 = x32.half()
            variants["fp16 eager"] = lambda: m16(x16)
            # default mode: max-autotune took > 6 min on an H100 (2026-11-23) for little gain at these sizes
            c16 = torch.compile(m16, dynamic=False)
            variants["fp16 compiled"] = lambda: c16(x16)
        for label, fn in variants.items():
            try:
                with torch.inference_mode():
                    rows.append({"model": name, "variant": label, **summarize(bench.time(fn), b)})
            except Exception as e:  # noqa: BLE001 — a failing variant is reported, others go on
                rows.append({"model": name, "variant": label, "batch": b, "error": _error(e)})
        # the product's backends, end to end from a CPU float batch (includes H2D/D2H copies)
        for backend_name, label in (("cuda", "fp16 cudagraphs (cuda backend)"), ("tensorrt", "tensorrt fp16")):
            try:
                t0 = time.perf_counter()
                be = create_backend(backend_name, base, max_batch=max(b, 1))
                be.infer(x_cpu)
                build_s = time.perf_counter() - t0
                rows.append({"model": name, "variant": label, "build_s": build_s,
                             "detail": be.describe(), **summarize(bench.time(lambda: be.infer(x_cpu)), b)})
            except BackendUnavailable as e:
                rows.append({"model": name, "variant": label, "batch": b, "unavailable": str(e)[:300]})
            except Exception as e:  # noqa: BLE001
                rows.append({"model": name, "variant": label, "batch": b, "error": _error(e)})
        print(json.dumps(rows[-len(variants) - 2:]), flush=True)
    return rows


def _decode_worker(args) -> dict:
    clip, size, seconds = args
    import av

    from monitor.decoder import select_decoder

    n, start, decoder = 0, time.perf_counter(), None
    while time.perf_counter() - start < seconds:
        with av.open(clip) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            decoder = select_decoder(s, "auto")
            fps = float(s.average_rate or 25)
            every = max(1, round(fps / 2))  # 2 samples/s, resized like the workers do
            for packet in c.demux(s):
                for frame in decoder.decode(packet):
                    n += 1
                    if n % every == 0:
                        frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
                if time.perf_counter() - start >= seconds:
                    break
    return {"frames": n, "seconds": time.perf_counter() - start, "fps": fps,
            "decoder": decoder.detail, "nvdec": decoder.hardware}


def bench_decode(clip: str, size: int, procs: int, seconds: float) -> dict:
    with mp.get_context("spawn").Pool(procs) as pool:
        res = pool.map(_decode_worker, [(clip, size, seconds)] * procs)
    return {"clip": Path(clip).name, "processes": procs, "clip_fps": res[0]["fps"],
            "decoder": res[0]["decoder"], "nvdec": res[0]["nvdec"],
            "decoded_fps_total": sum(r["frames"] / r["seconds"] for r in res)}


def streams_per_gpu(report: dict) -> dict:
    """Streams at 2 samples/s: the model side, the decode side, and which one limits."""
    model = [r["images_per_s"] for r in report["preprocess"] if "images_per_s" in r
             and r["path"].startswith("device") and r["frames"].startswith("model size")]
    out: dict = {"model_side": max(model, default=0) / 2,
                 "model_side_from": "best model, workers' frames, device preprocessing, largest batch"}
    if report["decode"]:
        full = report["decode"][-1]
        out["decode_side"] = full["decoded_fps_total"] / full["clip_fps"]
        out["decoder"] = full["decoder"]
        out["limit"] = "decode" if out["decode_side"] < out["model_side"] else "model"
        out["streams"] = min(out["decode_side"], out["model_side"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32 (cpu: 1 4)")
    ap.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--clip", nargs="*", default=[])
    ap.add_argument("--decode-seconds", type=float, default=5.0)
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="start no model measurement after this many seconds (compiles are slow)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: dry run of the script on the CPU (not GPU numbers)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 30; cpu 3)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (or --device cpu for a dry run)")
    batches = args.batches or ([1, 8, 32] if cuda else [1, 4])
    bench = Bench(args.device, args.iters or (30 if cuda else 3), args.budget_s)
    if cuda:
        torch.backends.cudnn.benchmark = True
    report = {"device": torch.cuda.get_device_name() if cuda else f"cpu dry run ({os.cpu_count()} cores)",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "decode": [], "preprocess": [], "rows": []}
    try:
        import tensorrt
        report["tensorrt"] = tensorrt.__version__
    except Exception as e:  # noqa: BLE001
        report["tensorrt"] = f"not importable: {_error(e)}"[:200]

    def save() -> None:  # keep what was measured even if a later step runs out of time
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))

    for clip in args.clip:
        for procs in sorted({1, os.cpu_count() or 1}):
            report["decode"].append(bench_decode(clip, args.size, procs, args.decode_seconds))
            print(json.dumps(report["decode"][-1]), flush=True)
    save()
    for name in args.models:
        try:
            report["preprocess"] += bench_preprocess(name, max(batches), bench)
        except Exception as e:  # noqa: BLE001
            report["preprocess"].append({"model": name, "error": _error(e)})
        save()
    for name in args.models:
        report["rows"] += bench_model(name, batches, args.size, bench)
        save()
    report["streams_per_gpu_at_2fps"] = streams_per_gpu(report)
    save()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
