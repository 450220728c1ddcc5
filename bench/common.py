"""Small timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def images_per_second(fn: Callable[[], object], batch: int, repeats: int = 5,
                      min_seconds: float = 1.0, sync: Callable[[], None] = lambda: None) -> dict:
    """Median images/s (and ms per batch) over ``repeats`` timed rounds after one warm-up."""
    fn()
    sync()
    rounds = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds / repeats:
                break
        rounds.append(elapsed / n)
    per_batch = statistics.median(rounds)
    return {"batch": batch, "ms_per_batch": per_batch * 1e3, "images_per_s": batch / per_batch}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]
