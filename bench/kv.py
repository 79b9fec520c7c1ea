"""Key-value calls from a guest: one get and one put, in µs, against the same function making no call, per backend.

    .venv/bin/python bench/kv.py [--seconds 3]

One C function (tests/guests/c/kv_ops.c) in one Runtime, invoked in process (fresh instance per request, as by
default): `/noop` makes no host call (the baseline), `/get/k` one get, `/put/k?v` one put. The series are
interleaved round by round so the machine's noise falls on all of them alike. Backends: SQLite (the default, one
file; every put is a committed transaction, synchronous=FULL) and PostgreSQL on loopback, with a node cache
(`cache_ttl_ms = 1000`: a repeated get is a cache hit) and without one (`0`: every get reads the database).
What a call adds is p50(call) - p50(noop); the ratio is p50(call) / p50(noop).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, TMP, log, sample_us, summarize, write_json  # noqa: E402

from edgefn.build.languages import build_source  # noqa: E402
from edgefn.build.toolchain import cache_dir  # noqa: E402
from edgefn.control.store import open_kv_store  # noqa: E402
from edgefn.core.app import FunctionSpec, Limits  # noqa: E402
from edgefn.core.events import EdgeRequest, Event, EventConfig  # noqa: E402
from edgefn.runtime.invoker import Runtime  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _event(uri: str, querystring: str = "") -> Event:
    return Event(EventConfig("origin-request", "bench-kv", "ops"), EdgeRequest("GET", uri, querystring, {}, "127.0.0.1"))


def run(seconds: float = 3.0) -> dict:
    work = TMP / "kv"
    work.mkdir(parents=True, exist_ok=True)
    wasm = build_source(REPO / "tests" / "guests" / "c" / "kv_ops.c", work / "kv_ops.wasm", "freestanding", cache_dir())
    backends = {
        "sqlite": lambda: open_kv_store(work / f"kv-{uuid.uuid4().hex[:8]}.db"),
        "postgresql, node cache 1 s": lambda: open_kv_store(POSTGRES, cache_ttl_s=1.0),
        "postgresql, no cache": lambda: open_kv_store(POSTGRES, cache_ttl_s=0.0),
    }
    out: dict[str, dict] = {}
    for name, opener in backends.items():
        store = opener()
        with Runtime(work / "store", workers=1, kv=store) as rt:
            spec = FunctionSpec("ops", rt.store.add(wasm), Limits(16, 5000, 50_000_000), kv_namespaces=("data",))
            rt.store.load(spec.digest, "ops")
            run_one = rt.invoker.invoke_sync
            run_one(spec, _event("/put/k", "v" * 64))
            series: dict[str, list[float]] = {"noop": [], "get": [], "put": []}
            calls = {"noop": _event("/noop"), "get": _event("/get/k"), "put": _event("/put/k", "v" * 64)}
            for _ in range(10):  # interleaved rounds
                for label, ev in calls.items():
                    series[label] += sample_us(lambda ev=ev: run_one(spec, ev), budget_s=seconds / 30, min_n=20)
            p50 = {label: summarize(v)["p50"] for label, v in series.items()}
            out[name] = {
                "us": {label: summarize(v) for label, v in series.items()},
                "get_adds_us": p50["get"] - p50["noop"], "put_adds_us": p50["put"] - p50["noop"],
                "get_ratio": p50["get"] / p50["noop"], "put_ratio": p50["put"] / p50["noop"],
            }
            log(f"kv {name:28} noop p50 {p50['noop']:7.1f} µs   get {p50['get']:7.1f} µs ({out[name]['get_ratio']:.2f}x)   "
                f"put {p50['put']:8.1f} µs ({out[name]['put_ratio']:.2f}x)")
    return {"backends": out, "value_bytes": 64}


def table(res: dict) -> str:
    """The markdown table of one run: p50 µs per invocation, and what one call adds to the same function making none."""
    rows = ["| backend | no call p50 µs | get p50 µs | get adds | get / no call | put p50 µs | put adds | put / no call |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in res["backends"].items():
        us = b["us"]
        rows.append(
            f"| {name} | {us['noop']['p50']:.1f} | {us['get']['p50']:.1f} | {b['get_adds_us']:.1f} | {b['get_ratio']:.2f}x "
            f"| {us['put']['p50']:.1f} | {b['put_adds_us']:.1f} | {b['put_ratio']:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per series and backend")
    a = parser.parse_args()
    res = run(a.seconds)
    write_json(RESULTS / "kv.json", res)
    print(table(res))


if __name__ == "__main__":
    main()
