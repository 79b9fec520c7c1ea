"""What a Python guest (a componentize-py component) costs: per request fresh vs reused, cold start, builds.

    .venv/bin/python bench/python_guest.py [--quick]

Runs the two Python examples (python-auth on its valid-token event, python-headers on an origin-response)
and, for reference, the C auth example. Writes bench/results/python_guest.json and prints a table.
Figures are medians on the shared 2-core machine: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

from common import REPO, RESULTS, write_json  # noqa: E402  (puts the repo on sys.path, sets EDGEFN_CACHE_DIR)

from edgefn.build.languages import build_source
from edgefn.build.python import build_key, componentize_py_version  # noqa: E402
from edgefn.build.toolchain import cache_dir
from edgefn.core import events
from edgefn.core.app import FunctionSpec, Limits
from edgefn.manifest.load import load_manifest  # noqa: E402
from edgefn.runtime import abi, wasm_binary  # noqa: E402
from edgefn.runtime.invoker import Runtime
from edgefn.runtime.module_store import _file_sha256  # noqa: E402

EXAMPLES = REPO / "examples"
OUT = RESULTS / "python_guest.json"


def sample_ms(fn: Callable[[], object], n: int, warmup: int = 3, setup: Callable[[], object] | None = None) -> dict[str, float]:
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(n):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(len(times) * 0.9) - 1], 3),
        "min_ms": round(times[0], 3),
        "n": n,
    }


def cpu_per_call(fn: Callable[[], object], n: int) -> dict[str, float]:
    """CPU time (this process, all threads) and minor page faults per call: steadier than wall time on a busy machine."""
    import resource

    fn()
    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    for _ in range(n):
        fn()
    return {
        "cpu_ms": round((time.process_time() - cpu) * 1000 / n, 3),
        "minor_faults": round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / n, 1),
    }


def spec_of(example: str, function: str, digest: str, **overrides: object) -> FunctionSpec:
    cfg = load_manifest(EXAMPLES / example / "edgefn.toml").functions[function]
    fields = dict(
        name=function, digest=digest, limits=Limits(cfg.memory_mb, cfg.timeout_ms, cfg.fuel, cfg.max_result_bytes),
        env=dict(cfg.env), reuse_instances=False,
    )
    fields.update(overrides)
    return FunctionSpec(**fields)  # type: ignore[arg-type]


def event_of(example: str, name: str) -> events.Event:
    return events.event_from_document(json.loads((EXAMPLES / example / "events" / f"{name}.json").read_text()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--rebuild", action="store_true", help="also time a componentize-py build from scratch (~10-40 s)")
    a = ap.parse_args()
    n = 60 if a.quick else 400
    res: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "componentize_py": componentize_py_version(),
    }
    zig = cache_dir()
    work = Path(tempfile.mkdtemp(prefix="edgefn-bench-py-"))
    try:
        # --- builds -------------------------------------------------------------------------------------
        auth_src = EXAMPLES / "python-auth" / "src" / "auth.py"
        builds: dict[str, object] = {}
        if a.rebuild:
            cached = zig.parent / "componentize-py" / f"{build_key(auth_src)}.wasm"
            cached.unlink(missing_ok=True)
            t = time.perf_counter()
            build_source(auth_src, work / "auth.wasm", "freestanding", zig)
            builds["componentize_py_build_s"] = round(time.perf_counter() - t, 2)
        auth_wasm = build_source(auth_src, work / "auth.wasm", "freestanding", zig)  # built now unless cached
        t = time.perf_counter()
        build_source(auth_src, work / "auth.wasm", "freestanding", zig)
        builds["cached_build_check_s"] = round(time.perf_counter() - t, 3)  # hash inputs + copy: no componentize-py
        headers_wasm = build_source(EXAMPLES / "python-headers" / "src" / "headers.py", work / "headers.wasm", "freestanding", zig)
        c_auth_wasm = build_source(EXAMPLES / "auth" / "src" / "auth.c", work / "c-auth.wasm", "freestanding", zig)
        builds["component_bytes"] = len(auth_wasm)
        builds["component_initial_memory_mb"] = round(wasm_binary.memory_min_bytes(auth_wasm) / 2**20, 2)
        res["build"] = builds

        store_dir = work / "store"
        with Runtime(store_dir, workers=1) as rt:
            digests = {name: rt.store.add(w) for name, w in (("auth", auth_wasm), ("headers", headers_wasm), ("c-auth", c_auth_wasm))}
            t = time.perf_counter()
            loaded, _ = rt.store.load(digests["auth"], "auth")
            res["precompile_component_s"] = round(time.perf_counter() - t, 2)
            res["precompiled_artifact_mb"] = round(loaded.artifact_bytes / 2**20, 1)
            rt.store.load(digests["headers"], "headers")
            rt.store.load(digests["c-auth"], "c-auth")
        artifact = next(store_dir.glob(f"artifacts/*/{digests['auth']}.component.cwasm"))

        # --- cold start from the on-disk store ---------------------------------------------------------------
        cold: dict[str, object] = {}
        valid = event_of("python-auth", "valid-token")

        def new_runtime_load_and_invoke() -> None:
            with Runtime(store_dir, workers=1) as rt:
                rt.invoker.invoke_sync(spec_of("python-auth", "auth", digests["auth"]), valid)

        cold["new_runtime_load_first_invocation"] = sample_ms(new_runtime_load_and_invoke, max(5, n // 40), warmup=1)
        with Runtime(store_dir, workers=1) as rt:
            def load_only() -> None:
                rt.store.evict(digests["auth"])
                rt.store.load(digests["auth"], "auth", compile_components=False)

            cold["store_load_verified_stamp"] = sample_ms(load_only, max(10, n // 20))
            cold["payload_sha256_full_check"] = sample_ms(lambda: _file_sha256(artifact), max(5, n // 40))
            from wasmtime import component as wc

            cold["deserialize_file_mmap"] = sample_ms(lambda: wc.Component.deserialize_file(rt.component_engine, str(artifact)), max(10, n // 20))
            blob = artifact.read_bytes()
            cold["deserialize_bytes"] = sample_ms(lambda: wc.Component.deserialize(rt.component_engine, blob), max(5, n // 40))
        script = textwrap.dedent(f"""
            import sys, time, json
            t0 = time.perf_counter()
            sys.path.insert(0, {str(REPO)!r})
            from pathlib import Path
            from edgefn.runtime import abi
            from edgefn.runtime.invoker import FunctionSpec, Runtime
            from edgefn.runtime.sandbox import Limits
            t1 = time.perf_counter()
            ev = events.event_from_document(json.loads(Path({str(EXAMPLES / 'python-auth' / 'events' / 'valid-token.json')!r}).read_text()))
            with Runtime(Path({str(store_dir)!r}), workers=1) as rt:
                t2 = time.perf_counter()
                rt.invoker.invoke_sync(FunctionSpec("auth", {digests['auth']!r}, Limits(64, 1000, 200_000_000), env={{"AUTH_TOKEN": "s3cr3t-t0ken"}}), ev)
                t3 = time.perf_counter()
            print(json.dumps({{"imports_ms": (t1 - t0) * 1000, "runtime_ms": (t2 - t1) * 1000, "load_and_first_request_ms": (t3 - t2) * 1000}}))
        """)
        procs = []
        for _ in range(3 if a.quick else 7):
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            procs.append(json.loads(out.strip().splitlines()[-1]))
        cold["new_process"] = {k: round(statistics.median(p[k] for p in procs), 2) for k in procs[0]}
        res["cold_start"] = cold

        # --- per request: fresh instance vs a warm, reused one --------------------------------------------------
        per: dict[str, object] = {}
        headers_event = event_of("python-headers", "origin-response-200")
        c_valid = event_of("auth", "valid-token")
        with Runtime(store_dir, workers=1) as rt:
            for key, example, function, digest, ev in (
                ("python_auth", "python-auth", "auth", digests["auth"], valid),
                ("python_headers", "python-headers", "headers", digests["headers"], headers_event),
            ):
                fresh = spec_of(example, function, digest)
                reused = spec_of(example, function, digest, reuse_instances=True)
                f = sample_ms(lambda: rt.invoker.invoke_sync(fresh, ev), n, warmup=10)
                w = sample_ms(lambda: rt.invoker.invoke_sync(reused, ev), n, warmup=10)
                done_f, done_w = rt.invoker.invoke_sync(fresh, ev), rt.invoker.invoke_sync(reused, ev)
                per[key] = {
                    "fresh_instance": f, "reused_instance": w,
                    "speedup_reused": round(f["median_ms"] / w["median_ms"], 2),
                    "fresh_cpu": cpu_per_call(lambda: rt.invoker.invoke_sync(fresh, ev), n // 2),
                    "reused_cpu": cpu_per_call(lambda: rt.invoker.invoke_sync(reused, ev), n // 2),
                    "fuel_fresh": done_f.report.fuel_used, "fuel_reused": done_w.report.fuel_used,
                    "event_bytes": len(abi.encode_event(ev)),
                }
            c_fresh = spec_of("auth", "auth", digests["c-auth"])
            per["c_auth_reference"] = {
                "fresh_instance": sample_ms(lambda: rt.invoker.invoke_sync(c_fresh, c_valid), n, warmup=10),
                "fresh_cpu": cpu_per_call(lambda: rt.invoker.invoke_sync(c_fresh, c_valid), n // 2),
            }

            # where a fresh Python instance's time goes: Store + instantiate (the sandbox alone)
            loaded, _ = rt.store.load(digests["auth"], "auth")
            lim = Limits(64, 1000, 200_000_000)
            per["python_instantiate_only"] = sample_ms(lambda: rt.sandbox.new_instance(loaded, lim, {}, "auth", "r"), n, warmup=10)

            # the list<u8> crossing by size: a POST body in the event crosses in; the result (the request, its
            # body unchanged so not sent back) is small
            sizes = {}
            for size in (1024, 16 * 1024, 256 * 1024, 1024 * 1024):
                ev = event_of("python-auth", "post-valid-token")
                ev.request.body = events.Body(os.urandom(size))
                reused = spec_of("python-auth", "auth", digests["auth"], reuse_instances=True, limits=Limits(256, 5000, 2_000_000_000))
                sizes[str(size)] = sample_ms(lambda: rt.invoker.invoke_sync(reused, ev), max(10, n // 20), warmup=2)
            per["reused_with_request_body_bytes"] = sizes
        res["per_request"] = per
    finally:
        shutil.rmtree(work, ignore_errors=True)

    write_json(OUT, res)
    p = res["per_request"]
    print(f"python-auth   fresh {p['python_auth']['fresh_instance']['median_ms']:.2f} ms   reused {p['python_auth']['reused_instance']['median_ms']:.2f} ms"
          f"   ({p['python_auth']['speedup_reused']}x)")
    print(f"python-headers fresh {p['python_headers']['fresh_instance']['median_ms']:.2f} ms   reused {p['python_headers']['reused_instance']['median_ms']:.2f} ms"
          f"   ({p['python_headers']['speedup_reused']}x)")
    print(f"C auth (reference) fresh {p['c_auth_reference']['fresh_instance']['median_ms']:.3f} ms")
    print(json.dumps(res["cold_start"], indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
