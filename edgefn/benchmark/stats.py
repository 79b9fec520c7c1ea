"""Distributions of timings: percentiles, a summary, and the timed loop every in-process figure comes from."""

from __future__ import annotations

import gc
import math
import time
from typing import Callable

__all__ = ["LADDER", "ladder", "percentile", "sample_us", "summarize"]

#: the percentiles a latency distribution is drawn with (wrk's reporter prints the same ones)
LADDER: tuple[float, ...] = (0, 1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99, 100)


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of an already sorted list; NaN for no values."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples: list[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of `samples` (any unit; the caller's)."""
    s = sorted(samples)
    if not s:
        return {"n": 0}
    return {
        "n": len(s), "min": s[0], "p50": percentile(s, 50), "p90": percentile(s, 90), "p99": percentile(s, 99), "max": s[-1],
        "mean": sum(s) / len(s),
    }


def ladder(samples: list[float]) -> dict[str, float]:
    """The distribution as LADDER's percentiles ("50" -> value), the form the plots draw."""
    s = sorted(samples)
    return {f"{p:g}": percentile(s, p) for p in LADDER} if s else {}


def sample_us(
    fn: Callable[[], object], *, budget_s: float, min_n: int = 5, max_n: int = 5000, warmup: int = 3, setup: Callable[[], object] | None = None,
) -> list[float]:
    """Time `fn` once per sample (µs), for at most `budget_s` seconds or `max_n` samples (at least `min_n`).

    `setup` runs before each sample, outside the timed region. The GC stays enabled (a server has it enabled
    too), but a collection is forced before the loop so an earlier phase's garbage is not billed here.
    """
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    gc.collect()
    out: list[float] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + budget_s
    while len(out) < max_n and (len(out) < min_n or time.perf_counter() < deadline):
        if setup:
            setup()
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out
