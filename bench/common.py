"""Shared by every bench module: paths, percentiles, timed loops, the machine description, CPU pinning."""

from __future__ import annotations

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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
TMP = RESULTS / "tmp"  # git-ignored scratch: manifests, module stores, server logs, generated guests
PROFILES = RESULTS / "profiles"
PYTHON = sys.executable

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("EDGEFN_CACHE_DIR", str(REPO / ".cache"))  # the zig cache `make` uses

# one implementation of percentiles and timed loops: the product's (edgefn bench)
from edgefn.benchmark.load import pinned  # noqa: E402
from edgefn.benchmark.stats import percentile, sample_us, summarize  # noqa: E402

__all__ = ["BENCH", "PROFILES", "PYTHON", "REPO", "RESULTS", "TMP", "cpu_sets", "log", "machine", "percentile", "pinned", "sample_us", "summarize", "write_json"]


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
