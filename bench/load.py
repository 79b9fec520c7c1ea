"""The load generator: wrk (C, epoll, closed loop: each connection sends its next request when the last returns),
run by edgefn's own driver (edgefn/benchmark/load.py, the one `edgefn bench` uses), plus this bench's noise accounting.

wrk runs on its own core (taskset) with one thread; the bench records its CPU use for every run, so a
reader can check it was far from saturated (it was: see `client_cpu` in the results).
"""

from __future__ import annotations

import time

import psutil
from common import REPO  # noqa: F401 - common puts the repository on sys.path

from edgefn.benchmark.load import have_wrk, run_load

__all__ = ["have_wrk", "wrk"]


def _busy(cores: list[int] | None) -> float:
    """Busy CPU seconds so far, over `cores` (all when None), from /proc/stat."""
    per = psutil.cpu_times(percpu=True)
    total = 0.0
    for i, t in enumerate(per):
        if cores is None or i in cores:
            total += t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
    return total


def _cores(cpus: str | None) -> list[int] | None:
    if not cpus:
        return None
    out: list[int] = []
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def wrk(url: str, connections: int, duration_s: float, cpus: str | None, server=None) -> dict:  # type: ignore[no-untyped-def]
    """Run wrk against `url`; returns requests/s, latency percentiles (µs), errors and the CPU use of both sides.

    `other_cpu` is the CPU that neither wrk nor the server used on the machine during the run (other
    engineers' tests, kernel work not billed to either process). With the server pinned, `noise` is the CPU
    used on the server's own cores by anything but the server: what actually competed with it. Runs are
    compared and kept by `noise`.
    """
    server_cores = _cores(getattr(server, "cpus", None))
    per0 = server.cpu_by_process() if server is not None else {}
    busy0 = _busy(None)
    core0 = _busy(server_cores) if server_cores else 0.0
    t0 = time.perf_counter()
    run = run_load(url, connections, duration_s, generator="wrk", cpus=cpus)  # the product's wrk driver (edgefn bench)
    wall = time.perf_counter() - t0
    busy = (_busy(None) - busy0) / wall
    core_busy = (_busy(server_cores) - core0) / wall if server_cores else None
    per1 = server.cpu_by_process() if server is not None else {}
    per_process = sorted(((per1[p] - per0.get(p, 0.0)) / wall for p in per1), reverse=True)
    server_cpu = sum(per_process) if server is not None else None
    result = {
        "connections": connections,
        "requests": run.requests,
        "seconds": run.seconds,
        "rps": run.rps,
        "latency_us": {"min": run.latency_us["0"], "max": run.latency_us["100"], "percentiles": run.latency_us},
        "p50_us": run.p50_us,
        "p99_us": run.p99_us,
        "errors": {**run.errors, "status": run.non_2xx},
        "failed": run.failed,
        "client_cpu": run.client_cpu,  # cores used by wrk (1.0 = its core saturated)
        "server_cpu": server_cpu,  # cores used by the server's processes
        "server_cpu_by_process": per_process,  # the same per process, busiest first (workers > 1: balance)
        "other_cpu": max(0.0, busy - run.client_cpu - (server_cpu or 0.0)),
    }
    result["other_on_server_cores"] = max(0.0, core_busy - (server_cpu or 0.0)) if core_busy is not None else None
    result["noise"] = result["other_on_server_cores"] if core_busy is not None else result["other_cpu"]
    return result
