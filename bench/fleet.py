"""The fleet on PostgreSQL against the SQLite default, in one run (`python bench/fleet.py`; docs/fleet.md).

1. Edge requests: the same hello app on one node with the SQLite control plane and one on PostgreSQL, both
   pinned to the server core, wrk on the other, interleaved rounds: req/s, p50, p99 and server CPU per request,
   PostgreSQL / SQLite. No request touches the database on either, so the ratio should be ~1.
2. Deploy -> all three nodes serving: three PostgreSQL nodes; each round changes hello's code (a new digest:
   the two nodes that did not build it fetch it from the database and precompile it), `edgefn deploy`s it
   through node 0, and times from the commit (the registry revision seen to move) to the new body on each node.
3. Async delivered throughput with 1, 2 and 3 nodes on one database, and one node on SQLite as the baseline: N
   events queued at once for a function that answers at once; events/s from the first enqueue to the last
   delivery (destination records), and the CPU per event of the nodes and of the PostgreSQL server.

The PostgreSQL is $EDGEFN_TEST_DATABASE_URL or the machine's (127.0.0.1:5432, database test); each part
uses a schema of its own, dropped afterwards. Writes bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' destination receiver and wait

from common import PYTHON, REPO, RESULTS, cpu_sets, log, machine, write_json  # noqa: E402
from servers import Server, free_port  # noqa: E402

from edgefn.benchmark.load import run_load  # noqa: E402
from edgefn.control.store import open_control_store  # noqa: E402
from tests.conftest import wait_for  # noqa: E402
from tests.servers import Receiver  # noqa: E402

#: how often a timed wait looks (the deploy rounds measure what they wait for)
POLL_S = 0.002

HELLO = REPO / "examples" / "hello" / "src" / "hello.c"
FLAKY = REPO / "tests" / "guests" / "c" / "flaky.c"
DATABASE = os.environ.get("EDGEFN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def schema() -> Iterator[str]:
    import psycopg

    name = f"edgefn_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DATABASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{DATABASE}{'&' if '?' in DATABASE else '?'}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(DATABASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def write_app(directory: Path, receiver_url: str, suffix: str = " from edgefn!") -> Path:
    (directory / "src").mkdir(parents=True, exist_ok=True)
    (directory / "src" / "hello.c").write_text(HELLO.read_text().replace('" from edgefn!"', json.dumps(suffix)))
    shutil.copy(FLAKY, directory / "src" / "flaky.c")
    manifest = directory / "edgefn.toml"
    manifest.write_text(f"""
[app]
name = "fleet-bench"

[queue]
workers = 4
poll_interval_ms = 100

[functions.hello]
source = "src/hello.c"

[functions.quick]
source = "src/flaky.c"
async_invoke = {{ max_retry_attempts = 0, on_success = "{receiver_url}/done" }}

[default_behavior]
function = "hello"
""")
    return manifest


def node(name: str, manifest: Path, control: str | None, cpus: str | None) -> Server:
    port = free_port()
    cmd = [PYTHON, "-m", "edgefn.cli", "serve", "--config", str(manifest), "--port", str(port), "--tls-port", "0", "--admin-port", "0"]
    if control:
        cmd += ["--control", control]
    return Server(name, cmd, port, cpus)


# --- 1. edge requests --------------------------------------------------------------------------------


def edge(tmp: Path, receiver: Receiver, rounds: int, seconds: float) -> dict[str, Any]:
    client_cpus, server_cpus = cpu_sets()
    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    with schema() as url:
        servers = {
            "sqlite": node("fleet-sqlite", write_app(tmp / "edge-sqlite", receiver.url), None, server_cpus),
            "postgresql": node("fleet-postgresql", write_app(tmp / "edge-pg", receiver.url), url, server_cpus),
        }
        for s in servers.values():
            s.start()
        try:
            for s in servers.values():  # warm-up
                run_load(s.base + "/", 16, 1, cpus=client_cpus)
            for r in range(rounds):
                for kind in (("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite")):
                    s = servers[kind]
                    cpu0 = s.cpu_seconds()
                    run = run_load(s.base + "/", 16, seconds, cpus=client_cpus)
                    cpu = s.cpu_seconds() - cpu0
                    runs[kind].append({"rps": run.rps, "p50_us": run.p50_us, "p99_us": run.p99_us, "cpu_us": cpu / max(run.requests, 1) * 1e6,
                                       "failed": run.failed})
                    log(f"edge {kind}: {run.rps:.0f} req/s, p50 {run.p50_us:.0f} us, p99 {run.p99_us:.0f} us")
        finally:
            for s in servers.values():
                s.stop()
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50_us", "p99_us", "cpu_us")} for k, v in runs.items()}
    ratio = {m: med["postgresql"][m] / med["sqlite"][m] for m in ("rps", "p50_us", "p99_us", "cpu_us")}
    return {"runs": runs, "median": med, "postgresql_over_sqlite": ratio, "failed": sum(x["failed"] for v in runs.values() for x in v)}


# --- 2. deploy -> three nodes ---------------------------------------------------------------------------


def propagation(tmp: Path, receiver: Receiver, rounds: int) -> dict[str, Any]:
    lags: list[list[float]] = []
    with schema() as url:
        manifests = [write_app(tmp / f"prop{i}", receiver.url) for i in range(3)]
        nodes = [node(f"fleet-node{i}", m, url, None) for i, m in enumerate(manifests)]
        for n in nodes:
            n.start()
        store = open_control_store(url)
        try:
            with httpx.Client(timeout=5) as client:
                for r in range(rounds):
                    text = f"Hello from round {r}!"
                    write_app(manifests[0].parent, receiver.url, suffix=f" from round {r}!")
                    before = store.registry.revision()
                    seen: dict[str, float] = {}

                    def watch(before: int = before, seen: dict[str, float] = seen) -> None:  # the commit's moment: the revision moves
                        wait_for(lambda: store.registry.revision() != before, 300, "the deploy's commit", POLL_S)
                        seen["commit"] = time.perf_counter()

                    watcher = threading.Thread(target=watch)
                    watcher.start()
                    proc = subprocess.run([PYTHON, "-m", "edgefn.cli", "deploy", "--config", str(manifests[0]), "--control", url],
                                          capture_output=True, text=True, cwd=REPO, timeout=300)
                    if proc.returncode != 0:
                        raise RuntimeError(proc.stderr)
                    served = []
                    for n in nodes:
                        served.append(wait_for(lambda n=n, text=text: client.get(n.base + "/").text == text and time.perf_counter(), 30, f"{n.name} to serve round {r}", POLL_S))
                    watcher.join()
                    lag = [(t - seen["commit"]) * 1000 for t in served]
                    lags.append(lag)
                    log(f"deploy round {r}: commit -> served {', '.join(f'{x:.0f}' for x in lag)} ms")
        finally:
            store.close()
            for n in nodes:
                n.stop()
    alls = [max(x) for x in lags]
    return {"rounds_ms": lags, "all_three_p50_ms": statistics.median(alls), "all_three_max_ms": max(alls)}


# --- 3. async throughput ---------------------------------------------------------------------------------


def async_throughput(tmp: Path, receiver: Receiver, events: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    payload = json.dumps({"request": {"method": "GET", "uri": "/", "querystring": ""}}).encode()
    for label, count in (("sqlite", 1), ("1", 1), ("2", 2), ("3", 3)):
        with schema() as pg_url:
            url = None if label == "sqlite" else pg_url  # the SQLite default, one node, as the baseline of the same run
            manifests = [write_app(tmp / f"async{label}-{i}", receiver.url) for i in range(count)]
            nodes = [node(f"fleet-async{label}-{i}", m, url, None) for i, m in enumerate(manifests)]
            for n in nodes:
                n.start()
            store = open_control_store(url or manifests[0].parent / ".edgefn" / "control.db")
            try:
                nodes_cpu0, db_cpu0 = sum(n.cpu_seconds() for n in nodes), postgres_cpu()
                t0 = time.perf_counter()
                ids = {store.queue.enqueue("quick", payload, source="bench") for _ in range(events)}

                def delivered(ids: set[str] = ids) -> dict[str, float]:
                    return {r["requestContext"]["requestId"]: t for t, r in receiver.arrivals("/done") if r["requestContext"]["requestId"] in ids}

                wait_for(lambda: len(delivered()) == events, 600, f"{events} deliveries", POLL_S * 50)
                last = max(delivered().values())
                nodes_cpu, db_cpu = sum(n.cpu_seconds() for n in nodes) - nodes_cpu0, postgres_cpu() - db_cpu0
                rate = events / (last - t0)
                out[label] = {
                    "events": events, "seconds": last - t0, "events_per_s": rate,
                    # where a delivery's CPU goes: the nodes (guest, queue client, destination POST) and the database server
                    "node_cpu_ms_per_event": nodes_cpu / events * 1000, "postgres_cpu_ms_per_event": db_cpu / events * 1000,
                }
                log(f"async, {label} node(s): {rate:.0f} events/s, node CPU {nodes_cpu / events * 1000:.1f} ms and PostgreSQL CPU "
                    f"{db_cpu / events * 1000:.1f} ms per event")
            finally:
                store.close()
                for n in nodes:
                    n.stop()
    for v in out.values():
        v["over_one_node"] = v["events_per_s"] / out["1"]["events_per_s"]
        v["over_sqlite"] = v["events_per_s"] / out["sqlite"]["events_per_s"]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """All three parts, in one run (`make bench`'s `fleet` phase calls this)."""
    rounds, seconds, deploys, events = (2, 2.0, 3, 100) if quick else (5, 5.0, 10, 400)
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="edgefn-fleet-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        started = time.time()
        return {
            "machine": machine(),
            "edge": edge(tmp, receiver, rounds, seconds),
            "deploy_propagation": propagation(tmp, receiver, deploys),
            "async": async_throughput(tmp, receiver, events),
            "seconds": time.time() - started,
        }


def table(result: dict[str, Any]) -> str:
    e, p = result["edge"], result["deploy_propagation"]
    r = e["postgresql_over_sqlite"]
    lines = [
        "| edge request, one node, c=16 | SQLite | PostgreSQL | PostgreSQL / SQLite |", "|---|---:|---:|---:|",
        *(f"| {label} | {e['median']['sqlite'][m]:,.0f} | {e['median']['postgresql'][m]:,.0f} | {r[m]:.3f}x |"
          for label, m in (("req/s", "rps"), ("p50 µs", "p50_us"), ("p99 µs", "p99_us"), ("server CPU µs / request", "cpu_us"))),
        "", f"Deploy (new code) -> all three nodes serving it, {len(p['rounds_ms'])} rounds: p50 {p['all_three_p50_ms']:.0f} ms, "
        f"max {p['all_three_max_ms']:.0f} ms (from the commit).", "",
        "| async delivery | events/s | / one PostgreSQL node | / SQLite | node CPU ms / event | PostgreSQL CPU ms / event |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {'SQLite, one node' if k == 'sqlite' else f'PostgreSQL, {k} node(s)'} | {v['events_per_s']:,.0f} | {v['over_one_node']:.2f}x | "
          f"{v['over_sqlite']:.2f}x | {v['node_cpu_ms_per_event']:.1f} | {v['postgres_cpu_ms_per_event']:.1f} |" for k, v in result["async"].items()),
    ]
    return "\n".join(lines)


def postgres_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL server's processes on this machine (0 where none is visible)."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, to check the harness")
    args = parser.parse_args()
    result = run(args.quick)
    path = (RESULTS / "tmp" / "results" if args.quick else RESULTS) / "fleet.json"
    write_json(path, result)
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
