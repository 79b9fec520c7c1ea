"""What a JavaScript / TypeScript guest costs, against C and Python and against the other JS engine, in one run.

    python bench/js_guest.py [--quick] [--no-starlingmonkey]

- Per request in process (`Invoker.invoke_sync`, one worker), a fresh instance and a reused one, for the same
  hello function in C (examples/hello), Python, and JS on QuickJS (what edgefn builds), plus the same JS bundle on
  StarlingMonkey (componentize-js, built against edgefn's world): wall time, CPU time and fuel per request.
- Builds: the JS build from scratch and from the cache, the TypeScript example's build, component sizes, the
  precompile, and cold start from the on-disk module store (a new Runtime, load, first request).
- StarlingMonkey's toolchain is installed on first use into edgefn's cache (npm), never into the project.
Writes bench/results/js_guest.json. Figures are ratios within this run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from common import REPO, RESULTS, write_json  # noqa: E402  (puts the repo on sys.path, sets EDGEFN_CACHE_DIR)

from edgefn.build import js  # noqa: E402
from edgefn.build.languages import build_source  # noqa: E402
from edgefn.build.toolchain import cache_dir, cache_root  # noqa: E402
from edgefn.core.app import FunctionSpec, Limits  # noqa: E402
from edgefn.core.events import EdgeRequest, Event, EventConfig  # noqa: E402
from edgefn.runtime.invoker import Runtime  # noqa: E402

OUT = RESULTS / "js_guest.json"
#: StarlingMonkey, pinned: only this bench installs it
STARLINGMONKEY = {"@bytecodealliance/componentize-js": "0.23.0", "@bytecodealliance/preview2-shim": "0.26.1"}

JS_HELLO = """export default {
  fetch(request) {
    return new Response(`Hello from JS: ${new URL(request.url).pathname}\\n`, { headers: { "content-type": "text/plain" } });
  },
};
"""
PY_HELLO = """from edgefn_guest import Response


def handler(event):
    return Response(200, f"Hello from Python: {event.request.uri}\\n", headers={"content-type": "text/plain"})
"""


def event() -> Event:
    req = EdgeRequest(method="GET", uri="/hello", querystring="a=1", client_ip="127.0.0.1",
                      headers={"host": [("Host", "example.test")], "user-agent": [("User-Agent", "bench")], "accept": [("Accept", "*/*")]})
    return Event(EventConfig("origin-request", "bench-request", "hello"), req)


def per_call(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(max(3, n // 20)):
        fn()
    wall = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t) * 1e6)
    cpu = (time.process_time() - cpu0) * 1e6 / n
    wall.sort()
    return {"p50_us": round(statistics.median(wall), 1), "p99_us": round(wall[int(n * 0.99) - 1], 1), "cpu_us": round(cpu, 1), "n": n}


def starlingmonkey_tool() -> Path | None:
    """componentize-js in edgefn's cache (installed with npm on first use); None without npm."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    home = cache_root() / "bench-peers" / "starlingmonkey"
    cli = home / "node_modules" / "@bytecodealliance" / "componentize-js" / "src" / "cli.js"
    if not cli.exists():
        home.mkdir(parents=True, exist_ok=True)
        (home / "package.json").write_text(json.dumps({"private": True, "dependencies": STARLINGMONKEY}))
        print(f"installing StarlingMonkey (componentize-js {STARLINGMONKEY['@bytecodealliance/componentize-js']}) into {home}")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=home, check=True, timeout=900)
        # componentize-js reads files through preview2-shim, which starts with no preopened directories
        (home / "preopen.mjs").write_text('import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";\n_setPreopens({ "/": "/" });\n')
    return cli


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--no-starlingmonkey", action="store_true", help="skip the StarlingMonkey rows (an npm install, a 10 s build)")
    a = ap.parse_args()
    n = 100 if a.quick else 600
    res: dict[str, object] = {"toolchain": json.loads((js.SDK_JS_DIR / "toolchain" / "package.json").read_text())["dependencies"]}
    work = Path(tempfile.mkdtemp(prefix="edgefn-bench-js-"))
    try:
        src = work / "hello.js"
        src.write_text(JS_HELLO)
        py_src = work / "hello_py.py"
        py_src.write_text(PY_HELLO)
        builds: dict[str, object] = {}
        cached = cache_root() / "componentize-qjs" / f"{js.build_key(src)}.wasm"
        cached.unlink(missing_ok=True)
        t = time.perf_counter()
        wasm = {"js_quickjs": js.build_js(src, work / "hello-qjs.wasm")}
        builds["js_build_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        js.build_js(src, work / "hello-qjs.wasm")
        builds["js_cached_build_check_s"] = round(time.perf_counter() - t, 3)
        ts_src = REPO / "examples" / "ts-api" / "src" / "api.ts"
        (cache_root() / "componentize-qjs" / f"{js.build_key(ts_src)}.wasm").unlink(missing_ok=True)
        t = time.perf_counter()
        js.build_js(ts_src, work / "api.wasm")
        builds["ts_example_build_s"] = round(time.perf_counter() - t, 3)
        wasm["c"] = build_source(REPO / "examples" / "hello" / "src" / "hello.c", work / "hello-c.wasm", "freestanding", cache_dir())
        wasm["python"] = build_source(py_src, work / "hello-py.wasm", "freestanding", cache_dir())
        cli = None if a.no_starlingmonkey else starlingmonkey_tool()
        if cli is not None:
            stage = work / "sm"
            stage.mkdir()
            bundled = js.bundle(src, stage)  # the same bundle QuickJS runs: SDK and function
            out = stage / "hello-sm.wasm"
            t = time.perf_counter()
            subprocess.run(
                ["node", "--import", str(cli.parents[4] / "preopen.mjs"), str(cli), str(bundled), "--wit", str(js.WIT_DIR),
                 "-n", js.WORLD, "-d", "http", "fetch-event", "-o", str(out)],
                check=True, capture_output=True, timeout=900, cwd=cli.parents[4],
            )
            builds["js_starlingmonkey_build_s"] = round(time.perf_counter() - t, 3)
            wasm["js_starlingmonkey"] = out.read_bytes()
        builds["bytes"] = {k: len(v) for k, v in wasm.items()}
        res["build"] = builds

        store_dir = work / "store"
        per: dict[str, object] = {}
        with Runtime(store_dir, workers=1) as rt:
            digests = {}
            precompile: dict[str, float] = {}
            artifact: dict[str, int] = {}
            for name, w in wasm.items():
                digests[name] = rt.store.add(w)
                t = time.perf_counter()
                loaded, _ = rt.store.load(digests[name], name)
                precompile[name] = round(time.perf_counter() - t, 3)
                artifact[name] = loaded.artifact_bytes
            res["precompile_s"] = precompile
            res["artifact_bytes"] = artifact
            for name, digest in digests.items():
                limits = Limits(memory_mb=64 if name != "c" else 16, timeout_ms=1000, fuel=500_000_000)
                row: dict[str, object] = {}
                for mode, reuse in (("fresh", False), ("reused", True)):
                    spec = FunctionSpec(name=name, digest=digest, limits=limits, reuse_instances=reuse)
                    done = rt.invoker.invoke_sync(spec, event())
                    assert done.result is not None and getattr(done.result, "status", 0) == 200, (name, done.result)
                    row[mode] = {**per_call(lambda: rt.invoker.invoke_sync(spec, event()), n if name != "python" or reuse else n // 4),
                                 "fuel": done.report.fuel_used}
                per[name] = row
        for name, row in per.items():
            for mode in ("fresh", "reused"):
                row[mode]["cpu_vs_c"] = round(row[mode]["cpu_us"] / per["c"][mode]["cpu_us"], 2)  # type: ignore[index]
        res["per_request"] = per

        # cold start: a new Runtime on the warm disk store, load, first request (QuickJS vs C)
        cold: dict[str, object] = {}
        for name in ("js_quickjs", "c"):
            times = []
            for _ in range(5 if a.quick else 15):
                t = time.perf_counter()
                with Runtime(store_dir, workers=1) as rt:
                    rt.invoker.invoke_sync(FunctionSpec(name=name, digest=digests[name], limits=Limits(64, 1000, 500_000_000)), event())
                times.append((time.perf_counter() - t) * 1000)
            cold[name] = {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}
        res["cold_start_new_runtime_first_request"] = cold
    finally:
        shutil.rmtree(work, ignore_errors=True)

    write_json(OUT, res)
    for name, row in res["per_request"].items():  # type: ignore[union-attr]
        f, r = row["fresh"], row["reused"]
        print(f"{name:18} fresh p50 {f['p50_us']:8.1f} us cpu {f['cpu_us']:8.1f} us ({f['cpu_vs_c']}x C) fuel {f['fuel']:>11,}"
              f"   reused p50 {r['p50_us']:8.1f} us cpu {r['cpu_us']:8.1f} us ({r['cpu_vs_c']}x C)")
    print(json.dumps({"build": res["build"], "precompile_s": res["precompile_s"], "cold": res["cold_start_new_runtime_first_request"]}, indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
