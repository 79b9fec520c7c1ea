"""Isolation between functions over HTTP, each figure a ratio against a clean run measured just before it.

1. CPU fairness: an open loop of 60 req/s for DURATION_S, 90% to a healthy function and 10% to a hostile
   one that burns its whole wall-clock budget (250 ms of CPU) on every call. Figure: the healthy calls' p95
   with the hostile mix / their p95 alone (the issue's target: <= 2.0; it was 19x before the scheduler).
2. Fetches that wait: the healthy function's p50/p95 while 16 fetches of a 3 s origin are in flight
   (looped, so 16 are always waiting) / the same with no fetches (target: <= 1.5).

    .venv/bin/python bench/isolation.py [--duration 15]

Writes bench/results/isolation.json. The server gets one core (2 guest slots), the load generator the
other when the machine has two.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import servers
from common import RESULTS, TMP, cpu_sets, log, percentile, write_json  # noqa: I001 - common puts the repo on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import wat_guest  # noqa: E402
from tests.origin_app import origin_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FETCHER = REPO / "tests" / "guests" / "c" / "fetcher.c"
RATE = 60.0
HOSTILE_SHARE = 0.10
SLOW_FETCHES = 16


def manifest(origin_port: int) -> Path:
    app = TMP / "isolation"
    app.mkdir(parents=True, exist_ok=True)
    (app / "healthy.wasm").write_bytes(wat_guest())
    (app / "hostile.wasm").write_bytes(wat_guest("(loop $l (br $l)) (unreachable)"))
    path = app / "edgefn.toml"
    path.write_text(
        f"""[app]
name = "isolation"
[server]
guest_threads = 2
[functions.healthy]
source = "{app / 'healthy.wasm'}"
[functions.hostile]
source = "{app / 'hostile.wasm'}"
fuel = 1_000_000_000_000
timeout_ms = 250
[functions.fetcher]
source = "{FETCHER}"
allowed_hosts = ["127.0.0.1:{origin_port}"]
timeout_ms = 10000
[[behaviors]]
path_pattern = "/healthy/*"
function = "healthy"
[[behaviors]]
path_pattern = "/hostile/*"
function = "hostile"
[[behaviors]]
path_pattern = "/fetch/*"
function = "fetcher"
[default_behavior]
origin = "http://127.0.0.1:{origin_port}"
"""
    )
    return path


async def open_loop(base: str, duration_s: float, hostile_share: float) -> list[float]:
    """Requests at RATE per second regardless of answers; the healthy ones' latencies in ms."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        async def one(path: str, healthy: bool) -> None:
            t0 = time.perf_counter()
            r = await client.get(path)
            if healthy:
                assert r.status_code == 200, r.status_code
                latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        every = round(1 / hostile_share) if hostile_share else 0
        i = 0
        while time.perf_counter() - start < duration_s:
            hostile = bool(every) and i % every == every - 1
            tasks.append(asyncio.create_task(one("/hostile/x" if hostile else "/healthy/x", not hostile)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
        await asyncio.gather(*tasks)
    return sorted(latencies)


async def with_slow_fetches(base: str, origin: str, duration_s: float) -> list[float]:
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        async def fetch_forever(i: int) -> None:
            while not stop.is_set():
                await client.get("/fetch/x", params={"url": f"{origin}/slow-{i}?delay=3"})

        fetchers = [asyncio.create_task(fetch_forever(i)) for i in range(SLOW_FETCHES)]
        await asyncio.sleep(1.0)  # all 16 waiting on the origin
        try:
            return await open_loop(base, duration_s, 0.0)
        finally:
            stop.set()
            await asyncio.gather(*fetchers)


def stats(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": percentile(samples, 50), "p95_ms": percentile(samples, 95), "p99_ms": percentile(samples, 99)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=15.0)
    a = p.parse_args()
    server_cpus, _ = cpu_sets()
    origin_port = servers.free_port()
    out: dict[str, object] = {"rate_per_s": RATE, "hostile_share": HOSTILE_SHARE, "duration_s": a.duration, "guest_slots": 2}
    with origin_server(origin_port) as origin:
        server = servers.edgefn("isolation", server_cpus, manifest=manifest(origin_port))
        with server:
            asyncio.run(open_loop(server.base, 2.0, 0.0))  # warm up
            log("isolation: clean")
            clean = asyncio.run(open_loop(server.base, a.duration, 0.0))
            log("isolation: 10% hostile")
            mixed = asyncio.run(open_loop(server.base, a.duration, HOSTILE_SHARE))
            log("isolation: clean again, then 16 slow fetches")
            clean2 = asyncio.run(open_loop(server.base, a.duration, 0.0))
            fetching = asyncio.run(with_slow_fetches(server.base, origin, a.duration))
    out["cpu_fairness"] = {
        "clean": stats(clean), "hostile_mix": stats(mixed),
        "p95_ratio": percentile(mixed, 95) / percentile(clean, 95), "target": "<= 2.0",
    }
    out["slow_fetches"] = {
        "clean": stats(clean2), "with_16_slow_fetches": stats(fetching),
        "p50_ratio": percentile(fetching, 50) / percentile(clean2, 50), "p95_ratio": percentile(fetching, 95) / percentile(clean2, 95),
        "target": "<= 1.5",
    }
    write_json(RESULTS / "isolation.json", out)
    f, s = out["cpu_fairness"], out["slow_fetches"]
    print(f"healthy p95 under a 10% hostile mix: {f['p95_ratio']:.2f}x the clean p95 ({f['hostile_mix']['p95_ms']:.1f} vs {f['clean']['p95_ms']:.1f} ms)")  # type: ignore[index]
    print(f"healthy p50/p95 with 16 slow fetches in flight: {s['p50_ratio']:.2f}x / {s['p95_ratio']:.2f}x")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
