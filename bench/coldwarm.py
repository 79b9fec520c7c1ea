"""Cold vs warm, end to end over HTTP: deploy with an empty store, restart with a warm disk store, steady state.

A "start" is measured from spawning `edgefn serve` to its health endpoint answering (it builds, precompiles
and loads every function before it binds); the "first request" is then timed on a new connection, with the
server's own Server-Timing. Steady state: sequential requests on one keep-alive connection, for `/` (hello)
and `/hooks/*` (hello behind four pass-through hooks), whose Server-Timing gives each stage's duration.
"""

from __future__ import annotations

import re
import shutil
import time

import servers
from common import log, summarize

from edgefn.benchmark.overhttp import HttpTarget, first_request, server_timing
from edgefn.benchmark.rawhttp import Connection


def _first_request(port: int, path: str = "/") -> dict:
    """A new connection, as a first visitor's (connect is timed): `edgefn bench`'s first request."""
    return first_request(port, HttpTarget(path, (), "", ()))


def _start(name: str, cpus: str | None) -> tuple[servers.Server, dict]:
    s = servers.edgefn(name, cpus)
    s.start(timeout=180)
    first = _first_request(s.port)
    second = _first_request(s.port)
    init = re.findall(r"Init Duration: ([\d.]+) ms", s.log.read_text())
    return s, {"start_to_healthy_s": s.startup_s, "first_request": first, "second_request": second, "init_duration_lines_ms": [float(x) for x in init]}


def _start_to_first_200(s: servers.Server, path: str = "/") -> float:
    """Seconds from spawning `s` to its first 200 on `path` (polled on new connections)."""
    t0 = time.perf_counter()
    s.spawn()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if _first_request(s.port, path)["status"] == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{s.name}: no 200 within 180 s")


def run(server_cpus: str | None, repeats: int = 2, steady_n: int = 300) -> dict:
    out: dict = {"deploy_empty_store": [], "restart_warm_store": [], "steady": {}, "restart_first_200_s": [], "baseline_first_200_s": []}
    for i in range(repeats):
        shutil.rmtree(servers.STORE_DIR, ignore_errors=True)  # an empty module store: a fresh deploy
        s, res = _start(f"cold-empty-{i}", server_cpus)
        s.stop()
        res["store_artifacts_after"] = len(list(servers.STORE_DIR.glob("artifacts/*/*.cwasm")))
        out["deploy_empty_store"].append(res)
        s, res = _start(f"cold-restart-{i}", server_cpus)  # the store now holds every artifact
        out["restart_warm_store"].append(res)
        if i < repeats - 1:
            s.stop()
    log("coldwarm: deploys and restarts done; steady state")
    try:
        with Connection("127.0.0.1", s.port) as conn:
            for key, path in (("hello", "/"), ("hooks", "/hooks/bench")):
                for _ in range(20):
                    conn.get(path)
                client_ms: list[float] = []
                stages: dict[str, list[float]] = {}
                for _ in range(steady_n):
                    t0 = time.perf_counter()
                    status, headers, body = conn.get(path)
                    client_ms.append((time.perf_counter() - t0) * 1000)
                    assert status == 200, body
                    for stage, ms in server_timing(headers.get("server-timing")).items():
                        stages.setdefault(stage, []).append(ms)
                out["steady"][key] = {
                    "path": path,
                    "client_ms": summarize(client_ms),
                    "server_timing_ms": {k: summarize(v) for k, v in stages.items()},
                }
    finally:
        s.stop()
    for i in range(repeats):  # process start -> first 200, the store warm (the restarts above): edgefn against plain Starlette on Hypercorn
        for key, make in (("baseline_first_200_s", lambda: servers.baseline("starlette-hypercorn", f"start-baseline-{i}", server_cpus)),
                          ("restart_first_200_s", lambda: servers.edgefn(f"start-edgefn-{i}", server_cpus))):
            starting = make()
            try:
                out[key].append(_start_to_first_200(starting))
            finally:
                starting.stop()
    hooks = out["steady"]["hooks"]["server_timing_ms"]
    hello = out["steady"]["hello"]["server_timing_ms"]
    per_hook = {k: v["p50"] for k, v in hooks.items() if k not in ("total", "origin")}
    out["per_hook_p50_ms"] = per_hook
    out["hooks_added_total_p50_ms"] = hooks["total"]["p50"] - hello["total"]["p50"]
    out["pipeline_outside_stages_p50_ms"] = {
        "hello": hello["total"]["p50"] - hello["origin"]["p50"],
        "hooks": hooks["total"]["p50"] - sum(v["p50"] for k, v in hooks.items() if k != "total"),
    }
    return out
