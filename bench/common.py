"""Shared by every bench module: paths, percentiles, timed loops, the machine description, CPU pinning."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
TMP = RESULTS / "tmp"  # git-ignored scratch: manifests, module stores, server logs, generated guests
PROFILES = RESULTS / "profiles"
PYTHON = sys.executable

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("EDGEFN_CACHE_DIR", str(REPO / ".cache"))  # the zig cache `make` uses


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of an already sorted list."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples_us: list[float]) -> dict[str, float]:
    s = sorted(samples_us)
    return {
        "n": len(s),
        "min": s[0],
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "max": s[-1],
        "mean": sum(s) / len(s),
    }


def sample_us(
    fn: Callable[[], object],
    *,
    budget_s: float,
    min_n: int = 5,
    max_n: int = 5000,
    warmup: int = 3,
    setup: Callable[[], object] | None = None,
) -> list[float]:
    """Time `fn` once per sample (µs), for at most `budget_s` seconds or `max_n` samples (at least `min_n`).

    `setup` runs before each sample, outside the timed region. The GC stays enabled (the server has it
    enabled too), but a collection is forced before the loop so an earlier phase's garbage is not billed here.
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


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    info: dict[str, object] = {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for pkg in ("wasmtime", "starlette", "hypercorn", "uvicorn", "uvloop", "httptools"):
        try:
            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional packages
            info[pkg] = None
    wrk = shutil.which("wrk")
    if wrk:
        proc = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        info["wrk"] = (proc.stdout + proc.stderr).splitlines()[0].strip() if (proc.stdout + proc.stderr) else "wrk"
    return info


def cpu_sets() -> tuple[str | None, str | None]:
    """(load generator CPUs, server CPUs): one core each when there are at least 2, else no pinning."""
    n = os.cpu_count() or 1
    if n >= 2 and shutil.which("taskset"):
        return "0", "1" if n == 2 else f"1-{n - 1}"
    return None, None


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
