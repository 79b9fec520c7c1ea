"""Over HTTP, through the real server and pipeline: a real `edgefn serve` and the baseline, each on a free loopback port.

For each target (a path that runs the functions measured, one per behavior): the first request after the server
started (a new connection; the server's own Server-Timing), then, at each concurrency, a load run against the
baseline and against every target in turn (so both see the same machine), and a sequential sample whose
Server-Timing gives each stage's duration. Server CPU per request = the server processes' CPU seconds / requests.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.app import ResolvedApp, ResolvedBehavior
from ..edge.routing import BehaviorRouter
from .load import Generator, LoadRun, run_load
from .processes import ServerProcess, baseline_server, edgefn_server
from .rawhttp import Connection
from .stats import summarize

__all__ = ["HEALTH", "HttpTarget", "first_request", "http_targets", "measure_http", "server_timing", "stage_sample"]

HEALTH = "/_edgefn/health"
_TIMING = re.compile(r"([\w-]+);dur=([\d.]+)")


@dataclass(frozen=True)
class HttpTarget:
    """A request that runs some of the functions measured: the behavior it matches and what runs there."""

    path: str
    #: sent with every request: the user's --header ones, and a Host for a behavior with a host pattern
    headers: tuple[tuple[str, str], ...]
    behavior: str  # its path pattern ("*": the default behavior)
    functions: tuple[str, ...]  # the origin function first, then the hooks in pipeline order


_HOOK_ORDER = ("viewer-request", "origin-request", "origin-response", "viewer-response")


def _names(b: ResolvedBehavior) -> tuple[str, ...]:
    hooks = tuple(b.hooks[t].function for t in _HOOK_ORDER if t in b.hooks)
    return ((b.function,) if b.function else ()) + hooks


def _concrete(pattern: str, filler: str) -> str:
    return pattern.replace("*", filler).replace("?", "x")


def http_targets(app: ResolvedApp, functions: list[str], headers: tuple[tuple[str, str], ...] = ()) -> tuple[list[HttpTarget], dict[str, str]]:
    """For each of `functions`, the behavior that runs it with the fewest others (a hook's response may skip the
    origin), with a path the router sends there; and, for each function no reachable behavior runs, why not."""
    router = BehaviorRouter(app.behaviors)
    wanted = set(functions)
    reachable: list[HttpTarget] = []
    unreachable: dict[str, str] = {}
    for b in app.behaviors:
        names = _names(b)
        if not set(names) & wanted:
            continue
        host = None if b.host_pattern == "*" else _concrete(b.host_pattern, "bench").lower()
        candidates = ["/", "/bench", "/edgefn-bench/index.html"] if b.is_default else [_concrete(b.path_pattern, f) for f in ("bench", "edgefn-bench/index.html", "")]
        path = next((c for c in candidates if c.startswith("/") and router.match(host or "127.0.0.1", c) is b), None)
        if path is None:
            for n in set(names) & wanted:
                unreachable.setdefault(n, f"behavior {b.path_pattern!r}: every path tried is routed to an earlier behavior")
            continue
        sent = tuple(headers) + ((("Host", host),) if host and not any(k.lower() == "host" for k, _ in headers) else ())
        reachable.append(HttpTarget(path, sent, b.path_pattern, names))
    chosen: list[HttpTarget] = []
    for n in functions:  # each function where it runs with the fewest others (alone, if some behavior has it alone)
        runs_it = [t for t in reachable if n in t.functions]
        if runs_it:
            best = min(runs_it, key=lambda t: (len(t.functions), reachable.index(t)))
            if best not in chosen:
                chosen.append(best)
    covered = {n for t in chosen for n in t.functions}
    why = {n: unreachable.get(n, "no behavior runs it (schedules, async or API invokes only)") for n in functions if n not in covered}
    return sorted(chosen, key=reachable.index), why


def server_timing(header: str | None) -> dict[str, float]:
    """Server-Timing "stage;dur=ms, ..." -> {stage: ms}."""
    return {name: float(ms) for name, ms in _TIMING.findall(header or "")}


def first_request(port: int, target: HttpTarget) -> dict[str, object]:
    """One request on a new connection (its connect timed too, as a first visitor's)."""
    t0 = time.perf_counter()
    with Connection("127.0.0.1", port, headers=target.headers) as conn:
        status, headers, _ = conn.get(target.path)
    return {
        "status": status, "client_ms": (time.perf_counter() - t0) * 1000, "server_timing_ms": server_timing(headers.get("server-timing")),
        "x_cache": headers.get("x-cache"),
    }


def stage_sample(port: int, target: HttpTarget, budget_s: float, max_n: int = 2000) -> dict[str, object]:
    """Sequential requests on one keep-alive connection: client latency (µs) and each Server-Timing stage (ms)."""
    client_us: list[float] = []
    stages: dict[str, list[float]] = {}
    statuses: dict[str, int] = {}
    cache: dict[str, int] = {}
    with Connection("127.0.0.1", port, headers=target.headers) as conn:
        deadline = time.perf_counter() + budget_s
        while len(client_us) < max_n and (len(client_us) < 5 or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            status, headers, _ = conn.get(target.path)
            client_us.append((time.perf_counter() - t0) * 1e6)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            x_cache = (headers.get("x-cache") or "-").split(" from ")[0]
            cache[x_cache] = cache.get(x_cache, 0) + 1
            for stage, ms in server_timing(headers.get("server-timing")).items():
                stages.setdefault(stage, []).append(ms)
    return {"client_us": summarize(client_us), "stages_ms": {k: summarize(v) for k, v in stages.items()}, "statuses": statuses, "x_cache": cache}


def _loaded(server: ServerProcess, target_path: str, connections: int, seconds: float, generator: Generator, cpus: str | None, headers: tuple[tuple[str, str], ...]) -> dict[str, object]:
    cpu0 = server.cpu_seconds()
    run: LoadRun = run_load(server.base + target_path, connections, seconds, generator=generator, cpus=cpus, headers=headers)
    cpu = server.cpu_seconds() - cpu0
    doc = run.document()
    doc["server_cpu_s"] = cpu
    doc["server_cpu_us_per_request"] = cpu / run.requests * 1e6 if run.requests else None
    return doc


def measure_http(
    app: ResolvedApp, targets: list[HttpTarget], *, concurrency: list[int], duration_s: float, generator: Generator, workdir: Path,
    server_cpus: str | None = None, client_cpus: str | None = None, progress: Callable[[str], None] = lambda _: None,
) -> dict[str, object]:
    """Start `edgefn serve` and the baseline, and measure every target at every concurrency against the baseline."""
    workers = app.server.workers
    edge = edgefn_server(app.manifest_path, workdir / "edgefn-serve.log", workers=workers, cpus=server_cpus)
    base = baseline_server(workdir / "baseline.log", workers=workers, cpus=server_cpus)
    warmup_s = min(1.0, max(0.2, duration_s / 5))
    out: dict[str, object] = {"workers": workers, "duration_s": duration_s, "concurrency": concurrency}
    try:
        progress("starting edgefn serve")
        edge.spawn().wait_healthy(HEALTH, timeout_s=600)
        out["edgefn_start_to_healthy_s"] = edge.start_s
        out["first_request"] = {t.path: first_request(edge.port, t) for t in targets}
        progress("starting the baseline")
        base.spawn().wait_healthy("/", timeout_s=120)
        out["baseline_start_to_healthy_s"] = base.start_s
        out["ports"] = {"edgefn": edge.port, "baseline": base.port}
        runs: dict[str, dict[str, dict[str, object]]] = {"baseline": {}}
        for t in targets:
            runs[t.path] = {}
        for c in concurrency:
            progress(f"baseline at c={c}")
            run_load(base.base + "/", c, warmup_s, generator=generator, cpus=client_cpus)
            runs["baseline"][str(c)] = _loaded(base, "/", c, duration_s, generator, client_cpus, ())
            for t in targets:
                progress(f"{t.path} ({', '.join(t.functions)}) at c={c}")
                run_load(edge.base + t.path, c, warmup_s, generator=generator, cpus=client_cpus, headers=t.headers)
                runs[t.path][str(c)] = _loaded(edge, t.path, c, duration_s, generator, client_cpus, t.headers)
        out["runs"] = runs
        progress("Server-Timing per stage")
        out["stages"] = {t.path: stage_sample(edge.port, t, min(2.0, max(0.5, duration_s / 4))) for t in targets}
        out["ratios"] = {t.path: {str(c): _ratios(runs[t.path][str(c)], runs["baseline"][str(c)]) for c in concurrency} for t in targets}
    finally:
        edge.stop()
        base.stop()
    return out


def _ratios(run: dict[str, object], baseline: dict[str, object]) -> dict[str, float | None]:
    def div(a: object, b: object) -> float | None:
        return float(a) / float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    return {
        "rps": div(run["rps"], baseline["rps"]), "p50": div(run["p50_us"], baseline["p50_us"]), "p99": div(run["p99_us"], baseline["p99_us"]),
        "cpu_per_request": div(run["server_cpu_us_per_request"], baseline["server_cpu_us_per_request"]),
    }
