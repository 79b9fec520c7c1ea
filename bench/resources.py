"""Resource figures: memory per deployed-but-idle function, per in-flight instance; throughput vs worker processes.

Memory is measured in a fresh child process (`python bench/resources.py memory-child ...`) that holds only the
runtime: its RSS and USS (private memory, from /proc/PID/smaps) after imports, after loading N distinct
precompiled functions from the store (what a deployed, idle function holds: Module + InstancePre), and with K
instances alive at once (a Store + instance each, invoked once, as an in-flight request holds them).
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PYTHON, TMP, log

N_SMALL, N_MEDIUM = 40, 3
K_SMALL, K_MEDIUM = 100, 20


def memory() -> dict:
    import guests

    from edgefn.runtime.invoker import Runtime

    TMP.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mem-", dir=TMP))
    try:
        small, medium = guests.small(), guests.medium()
        plan = {
            "small": guests.variants(small.wasm, b" from edgefn!", N_SMALL + 1),
            "medium": guests.variants(medium.wasm, b"medium guest", N_MEDIUM),
        }
        digests: dict[str, list[str]] = {}
        with Runtime(root / "store", workers=1) as rt:  # precompile every variant: the child loads artifacts
            for kind, mods in plan.items():
                digests[kind] = [rt.store.add(w) for w in mods]
                for d in digests[kind]:
                    rt.store.load(d, kind)
        proc = subprocess.run(
            [PYTHON, str(Path(__file__).resolve()), "memory-child", str(root / "store"), json.dumps(digests)],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed: {proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["n"] = {"small_functions": N_SMALL, "medium_functions": N_MEDIUM, "small_instances": K_SMALL, "medium_instances": K_MEDIUM}
    return res


def _mem() -> dict[str, int]:
    import psutil

    gc.collect()
    m = psutil.Process().memory_full_info()
    return {"rss": m.rss, "uss": m.uss, "vms": m.vms}


def _delta(a: dict[str, int], b: dict[str, int], n: int) -> dict[str, float]:
    return {k: (b[k] - a[k]) / n for k in a}


def memory_child(store_dir: str, digests_json: str) -> None:
    import logging

    import wasmtime

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import micro

    import fastpath

    from edgefn.runtime import abi
    from edgefn.runtime.context import InvocationContext, set_current_context
    from edgefn.runtime.invoker import Runtime

    logging.disable(logging.CRITICAL)
    digests = json.loads(digests_json)
    out: dict = {}
    with Runtime(Path(store_dir), workers=1) as rt:
        out["process_after_start"] = _mem()
        rt.store.load(digests["small"][0], "small")  # the first load pays one-time costs: not per function
        base = _mem()
        loaded_small = [rt.store.load(d, "small")[0] for d in digests["small"][1:]]
        after_small = _mem()
        out["idle_function_small"] = _delta(base, after_small, len(loaded_small))
        loaded_medium = [rt.store.load(d, "medium")[0] for d in digests["medium"]]
        after_medium = _mem()
        out["idle_function_medium"] = _delta(after_small, after_medium, len(loaded_medium))

        event = abi.encode_event(micro.typical_event("small"))
        set_current_context(InvocationContext("small", "r", {"GREETING": b"Hello"}, lambda level, msg: None))
        try:
            for kind, module, k in (("small", loaded_small[0], K_SMALL), ("medium", loaded_medium[0], K_MEDIUM)):
                before = _mem()
                alive = []
                for _ in range(k):  # an in-flight invocation: its Store and instance, after edgefn_handle ran
                    store = wasmtime.Store(rt.engine)
                    store.set_fuel(micro.LIMITS.fuel)
                    store.set_limits(memory_size=micro.LIMITS.memory_mb << 20)
                    store.set_epoch_deadline(10**9)
                    inst = fastpath.instantiate(store, module.pre)
                    mem = fastpath.memory(store, fastpath.export(store, inst, module.info.memory_export))
                    ptr = fastpath.call(store, fastpath.export(store, inst, module.info.alloc_export), (len(event),), fastpath.I32)
                    mem.write(ptr, event)
                    fastpath.call(store, fastpath.export(store, inst, module.info.handle_export), (ptr, len(event)), fastpath.I64)
                    alive.append((store, inst, mem))
                during = _mem()
                out[f"inflight_instance_{kind}"] = _delta(before, during, k)
                out[f"inflight_instance_{kind}"]["linear_memory_bytes"] = alive[0][2].size()
                del alive, store, inst, mem
                time.sleep(0.05)
        finally:
            set_current_context(None)
    print(json.dumps(out))


def workers_scaling(lg_cpus: str | None, seconds: float, rounds: int = 2, connections: int = 64) -> dict:
    """Throughput of edgefn hello and of the Starlette/Hypercorn baseline with 1 and 2 worker processes.

    The servers are not pinned (2 workers need both cores); wrk stays on its core and so shares it with one
    worker. Each point keeps the quietest of `rounds` runs.
    """
    import load
    import servers
    from throughput import probe

    configs = [
        ("edgefn", 1, lambda: servers.edgefn("edgefn-w1", None, workers=1)),
        ("edgefn", 2, lambda: servers.edgefn("edgefn-w2", None, workers=2)),
        ("starlette_hypercorn", 1, lambda: servers.baseline("starlette-hypercorn", "starlette-hypercorn-w1", None, workers=1)),
        ("starlette_hypercorn", 2, lambda: servers.baseline("starlette-hypercorn", "starlette-hypercorn-w2", None, workers=2)),
    ]
    started = [(name, w, make()) for name, w, make in configs]
    out: dict = {"connections": connections, "note": "servers unpinned, wrk pinned to one core", "runs": {}}
    try:
        for name, w, s in started:
            s.spawn()
        for name, w, s in started:
            s.wait_healthy(timeout=180)
        time.sleep(1.0)  # multi-worker servers answer health from the first worker; let the others finish startup
        for name, w, s in started:
            probe(s.base, "/")
            load.wrk(s.base + "/", connections, 1, lg_cpus, s)
            out.setdefault("idle_rss_bytes", {})[f"{name}_w{w}"] = s.rss_bytes()
        for r in range(rounds):
            order = started if r % 2 == 0 else list(reversed(started))
            for name, w, s in order:
                res = load.wrk(s.base + "/", connections, seconds, lg_cpus, s)
                out["runs"].setdefault(name, {}).setdefault(str(w), []).append(res)
                per = "/".join(f"{x:.2f}" for x in res["server_cpu_by_process"])
                log(f"  workers: {name} w={w} {res['rps']:8.0f} req/s  server {res['server_cpu']:.2f} ({per}) other {res['other_cpu']:.2f} cores")
        for name, w, s in started:  # one rerun of a point disturbed by other processes (servers are unpinned here)
            runs = out["runs"][name][str(w)]
            if min(r["noise"] for r in runs) > 0.3:
                res = load.wrk(s.base + "/", connections, seconds, lg_cpus, s)
                runs.append(res)
                log(f"  workers: rerun {name} w={w} {res['rps']:8.0f} req/s  other {res['other_cpu']:.2f} cores")
    finally:
        for _, _, s in started:
            s.stop()
    best = {n: {w: min(rs, key=lambda x: x["noise"]) for w, rs in ws.items()} for n, ws in out["runs"].items()}
    out["best"] = best
    out["scaling"] = {n: best[n]["2"]["rps"] / best[n]["1"]["rps"] for n in best}
    out["edgefn_over_baseline"] = {w: best["edgefn"][w]["rps"] / best["starlette_hypercorn"][w]["rps"] for w in ("1", "2")}
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "memory-child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        memory_child(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
