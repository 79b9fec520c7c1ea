"""Throughput and latency over HTTP/1.1 at concurrency 1 and 32: edgefn and its baselines, interleaved.

Every server runs at once, pinned to the server core; wrk runs on the other core. The matrix is measured in
rounds (targets interleaved, order reversed each round; compile-on-every-request, ~40x slower, in the first
only) so edgefn and its baselines see the same machine;
for each point the bench keeps the run with the least CPU used by anything else on the machine (other
engineers' tests, measured on the server's core: `noise`), and reruns points that were never quiet while the time budget allows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import load
import servers
import wasmtime_serve
from common import log

CONCURRENCY = (1, 32)
NOISY = 0.15  # CPU used on the server's core by anything else, above which a run counts as disturbed


@dataclass
class Target:
    key: str
    label: str
    server: str  # key into the servers dict
    path: str
    concurrency: tuple[int, ...] = CONCURRENCY
    rounds: int | None = None  # rounds this target is measured in (None: every round)
    short: bool = True  # measured for `short_seconds` (the headline pair gets the full `seconds`)


TARGETS = [
    Target("edgefn_hello", "edgefn: hello (full pipeline)", "edgefn", "/", rounds=None, short=False),
    Target("edgefn_hooks", "edgefn: hello + 4 pass-through hooks", "edgefn", "/hooks/bench"),
    Target("edgefn_cached", "edgefn: hello behind a cache policy", "edgefn", "/cached/bench"),
    Target("starlette_hypercorn", "baseline: Starlette on Hypercorn (edgefn's settings)", "starlette_hypercorn", "/", rounds=None, short=False),
    Target("starlette_uvicorn", "baseline: Starlette on uvicorn + httptools + uvloop", "starlette_uvicorn", "/", rounds=None, short=False),
    Target("edgefn_nostore", "baseline: edgefn compiling on every request (no module store)", "edgefn_nostore", "/", (32,), rounds=1),
    Target("edgefn_uv_hello", "edgefn on the uvicorn listener: hello (full pipeline)", "edgefn_uvicorn", "/"),
    Target("edgefn_uv_warm", "edgefn on the uvicorn listener: hello, reuse_instances = true", "edgefn_uvicorn", "/warm/bench"),
    Target("edgefn_uv_hooks", "edgefn on the uvicorn listener: hello + 4 pass-through hooks", "edgefn_uvicorn", "/hooks/bench", (32,)),
    Target("edgefn_uv_cached", "edgefn on the uvicorn listener: hello behind a cache policy", "edgefn_uvicorn", "/cached/bench"),
    Target("edgefn_py_warm", "edgefn: Python hello, reuse_instances = true", "edgefn_py", "/warm/bench"),
    Target("edgefn_py_fresh", "edgefn: Python hello, fresh instance per request", "edgefn_py", "/", (32,), rounds=1),
    Target("edgefn_uv_py_warm", "edgefn on the uvicorn listener: Python hello, reuse_instances = true", "edgefn_py_uvicorn", "/warm/bench"),
    Target("wasmtime_serve", "peer: `wasmtime serve`, WAT wasi:http component, fresh instance per request", "wasmtime_serve", "/"),
]


#: the edgefn rows, each divided by every baseline (ratios) and checked by targets 8 and 9 (report.py)
EDGEFN_ROWS = (
    "edgefn_hello", "edgefn_warm", "edgefn_hooks", "edgefn_cached", "edgefn_py_warm", "edgefn_py_fresh",
    "edgefn_uv_hello", "edgefn_uv_warm", "edgefn_uv_hooks", "edgefn_uv_cached", "edgefn_uv_py_warm",
)


if servers.REUSE_SUPPORTED:  # the runtime in this tree keeps warm instances for functions that opt in
    TARGETS.insert(1, Target("edgefn_warm", "edgefn: hello, reuse_instances = true (warm pool)", "edgefn", "/warm/bench"))


def make_servers(server_cpus: str | None, out: dict) -> dict[str, servers.Server]:
    svs = {
        "edgefn": servers.edgefn("edgefn", server_cpus),
        "starlette_hypercorn": servers.baseline("starlette-hypercorn", "starlette-hypercorn", server_cpus),
        "starlette_uvicorn": servers.baseline("starlette-uvicorn", "starlette-uvicorn", server_cpus),
        "edgefn_nostore": servers.baseline("edgefn-nostore", "edgefn-nostore", server_cpus),
        "edgefn_py": servers.edgefn("edgefn-py", server_cpus, manifest=servers.PY_MANIFEST),
        "edgefn_uvicorn": servers.edgefn("edgefn-uvicorn", server_cpus, manifest=servers.MANIFEST_UVICORN),
        "edgefn_py_uvicorn": servers.edgefn("edgefn-py-uvicorn", server_cpus, manifest=servers.PY_MANIFEST_UVICORN),
    }
    try:  # the native peer (target 9): measured wherever its CLI, wasm-tools and WIT are to be had
        port = servers.free_port()
        svs["wasmtime_serve"] = servers.Server("wasmtime-serve", wasmtime_serve.command(port), port, server_cpus)
        out["wasmtime_serve"] = {"version": wasmtime_serve.version()}
    except wasmtime_serve.PeerUnavailable as e:
        out["wasmtime_serve"] = {"unavailable": str(e)}
        log(f"throughput: wasmtime serve not measured: {e}")
    return svs


def probe(base: str, path: str) -> dict:
    """Two requests on one connection: what the load will get (status, body, x-cache, Server-Timing)."""
    with httpx.Client(timeout=10.0) as client:
        first = client.get(base + path)
        second = client.get(base + path)
    return {
        "status": second.status_code,
        "body": second.text[:80],
        "x_cache_first": first.headers.get("x-cache"),
        "x_cache_second": second.headers.get("x-cache"),
        "server_timing": second.headers.get("server-timing"),
        "server": second.headers.get("server"),
    }


def run(lg_cpus: str | None, server_cpus: str | None, *, seconds: float, rounds: int, budget_s: float, short_seconds: float = 2.0) -> dict:
    started = time.monotonic()
    out: dict = {"seconds_per_run": seconds, "short_seconds_per_run": short_seconds, "rounds": rounds, "load_cpus": lg_cpus, "server_cpus": server_cpus, "targets": {}}
    svs = make_servers(server_cpus, out)
    targets = [t for t in TARGETS if t.server in svs]
    try:
        for s in svs.values():
            s.spawn()  # all at once; each is timed from its own spawn
        for name, s in svs.items():
            s.wait_healthy()
            log(f"throughput: {name} healthy in {s.startup_s:.2f} s")
        for name, s in svs.items():
            out.setdefault("idle_rss_bytes", {})[name] = s.rss_bytes()
        warmed: set[str] = set()
        for t in targets:
            base = svs[t.server].base
            out["targets"][t.key] = {"label": t.label, "path": t.path, "probe": probe(base, t.path), "runs": {}}
            if t.server not in warmed:  # one warm-up per server, discarded (the probe made each path's first call)
                load.wrk(base + t.path, 16, 1, lg_cpus, svs[t.server])
                warmed.add(t.server)
        points = [(t, c) for c in CONCURRENCY for t in targets if c in t.concurrency]
        for r in range(rounds):
            order = points if r % 2 == 0 else list(reversed(points))
            for t, c in order:
                if t.rounds is not None and r >= t.rounds:
                    continue
                _measure(out, t, c, svs, lg_cpus, short_seconds if t.short else seconds)
            log(f"throughput: round {r + 1} done ({time.monotonic() - started:.0f} s)")
        # rerun the headline points that were never measured quietly, while the budget lasts
        for t, c in points:
            if t.short:
                continue
            runs = out["targets"][t.key]["runs"][str(c)]
            if min(x["noise"] for x in runs) > NOISY and time.monotonic() - started + seconds + 1 < budget_s:
                log(f"throughput: rerun {t.key} c={c} (other load on the server core {min(x['noise'] for x in runs):.2f})")
                _measure(out, t, c, svs, lg_cpus, short_seconds if t.short else seconds)
        for name, s in svs.items():
            out.setdefault("startup_s", {})[name] = s.startup_s
            if name.startswith("edgefn") and name != "edgefn_nostore":
                out.setdefault("inline", {})[name] = _inline_stats(s)
    finally:
        for s in svs.values():
            s.stop()
    for t in targets:
        entry = out["targets"][t.key]
        entry["best"] = {c: min(runs, key=lambda x: (x["failed"] > 0, x["noise"])) for c, runs in entry["runs"].items()}
        # run-to-run spread of req/s at each point: (max - min) / max over its runs
        entry["spread"] = {
            c: {"runs": len(runs), "rps": [r["rps"] for r in runs], "spread": (max(r["rps"] for r in runs) - min(r["rps"] for r in runs)) / max(r["rps"] for r in runs)}
            for c, runs in entry["runs"].items()
        }
    out["ratios"] = ratios(out)
    return out


def _inline_stats(s: servers.Server) -> dict:
    """The server's inline runs and slice misses so far ({} from a tree without them)."""
    try:
        return dict(httpx.get(s.base + "/_edgefn/info", timeout=10.0).json().get("inline") or {})
    except (httpx.HTTPError, ValueError):
        return {}


def _measure(out: dict, t: Target, c: int, svs: dict, lg_cpus: str | None, seconds: float) -> None:
    s = svs[t.server]
    res = load.wrk(s.base + t.path, c, seconds, lg_cpus, s)
    res["noisy"] = res["noise"] > NOISY
    out["targets"][t.key]["runs"].setdefault(str(c), []).append(res)
    log(
        f"  {t.key:22} c={c:<3} {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1000:7.2f} ms  p99 {res['p99_us'] / 1000:7.2f} ms"
        f"  server {res['server_cpu']:.2f} wrk {res['client_cpu']:.2f} cores, others {res['other_cpu']:.2f} (on server core {res['noise']:.2f})"
        + (f"  FAILED {res['failed']}" if res["failed"] else "")
    )


def cpu_per_request_us(run: dict) -> float:
    """Server CPU seconds per request, in µs: the figure least disturbed by other load on the machine."""
    return run["server_cpu"] * run["seconds"] / max(1, run["requests"]) * 1e6


def ratios(out: dict) -> dict:
    """Each edgefn figure over each baseline, per concurrency, from the kept (quietest) runs."""
    best = {k: v["best"] for k, v in out["targets"].items()}
    res: dict = {}
    for key in EDGEFN_ROWS:
        for base in ("starlette_hypercorn", "starlette_uvicorn", "edgefn_nostore", "wasmtime_serve"):
            for c in best.get(key, {}):
                a, b = best[key][c], best.get(base, {}).get(c)  # a peer that was not to be had has no row
                if b is None:
                    continue
                res.setdefault(key, {}).setdefault(base, {})[c] = {
                    "rps_ratio": a["rps"] / b["rps"],
                    "cpu_per_request_ratio": cpu_per_request_us(a) / cpu_per_request_us(b),
                    "p50_ratio": a["p50_us"] / b["p50_us"],
                    "p99_ratio": a["p99_us"] / b["p99_us"],
                }
    return res
