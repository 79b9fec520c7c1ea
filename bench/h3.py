"""One HTTP/3 run: edgefn hello and the Starlette/Hypercorn baseline over QUIC, with bench/h3load.py.

Both servers run with TLS and HTTP/3 on their TLS port (edgefn's own listeners; the baseline gets the same
Hypercorn config from edgefn.server.hypercorn_config) and are pinned to the server core; the client is pinned
to the other. The client's and the servers' CPU use are recorded for each run, and one extra run of the
baseline is profiled with py-spy to show where an HTTP/3 request's server CPU goes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import profiles
import servers
from common import BENCH, PYTHON, log, pinned


def h3_client(url: str, connections: int, seconds: float, cpus: str | None, server) -> dict:  # type: ignore[no-untyped-def]
    cmd = pinned([PYTHON, str(BENCH / "h3load.py"), url, "--concurrency", str(connections), "--seconds", str(seconds)], cpus)
    cpu0, children0 = server.cpu_seconds(), _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=seconds + 60)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"h3load failed: {err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["server_cpu"] = (server.cpu_seconds() - cpu0) / wall
    res["client_cpu"] = (_children_cpu() - children0) / wall  # includes the client's start-up (~0.3 s of imports)
    res["connections"] = connections
    return res


def run(lg_cpus: str | None, server_cpus: str | None, seconds: float, concurrency: tuple[int, ...] = (1, 16)) -> dict:
    edge_tls, base_tls = servers.free_port(), servers.free_port()
    edge = servers.edgefn("edgefn-h3", server_cpus, tls_port=edge_tls)
    base = servers.baseline("starlette-hypercorn", "starlette-hypercorn-h3", server_cpus, tls_port=base_tls)
    out: dict = {"client": "bench/h3load.py (Python, aioquic + uvloop), one QUIC connection, N streams in flight", "runs": {}}
    try:
        for s in (edge, base):
            s.spawn()
        for s in (edge, base):
            s.wait_healthy(timeout=180)
        targets = (("edgefn_hello", edge, edge_tls), ("starlette_hypercorn", base, base_tls))
        for key, s, tls in targets:
            h3_client(f"https://127.0.0.1:{tls}/", 4, 1, lg_cpus, s)  # warm-up
        for c in concurrency:
            for key, s, tls in targets:
                res = h3_client(f"https://127.0.0.1:{tls}/", c, seconds, lg_cpus, s)
                out["runs"].setdefault(key, {})[str(c)] = res
                log(f"  h3: {key:20} c={c:<3} {res['rps']:7.0f} req/s p50 {res['p50_us'] / 1000:6.2f} ms  client {res['client_cpu']:.2f} cores, server {res['server_cpu']:.2f}")
        out["profile_starlette_hypercorn_h3"] = profiles.profile_server(
            base, f"https://127.0.0.1:{base_tls}/", 16, 4.0, lg_cpus, "starlette_hypercorn_h3", driver=h3_client
        )
    finally:
        for s in (edge, base):
            s.stop()
    out["ratio_edgefn_over_baseline_h3"] = {
        c: out["runs"]["edgefn_hello"][c]["rps"] / out["runs"]["starlette_hypercorn"][c]["rps"] for c in out["runs"]["edgefn_hello"]
    }
    return out


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system
