"""Profiles as evidence: py-spy on a server under load, pyinstrument on the in-process invocation loop.

py-spy samples only threads that are on a CPU (no --idle). The server is pinned to one core, so a sample is
the core's CPU at that instant, in the thread that had it; time inside wasmtime's C code (ctypes releases the
GIL) shows up at the Python call site. Each sample is attributed to the *leaf-most* frame that belongs to a
known component (below), so "logging" is time spent inside the logging package whoever called it.
Shares x the server's CPU per request (same run) = CPU µs per request per component.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from common import PROFILES, PYTHON, log

#: (component, path fragment of a frame's file). Checked from the leaf up; the first frame matching any wins.
COMPONENTS: list[tuple[str, str]] = [
    ("logging (stdlib)", "logging/"),
    ("json (access log)", "json/"),
    ("CBOR encode/decode (edgefn abi)", "edgefn/runtime/abi.py"),
    ("sandbox: wasmtime C API + wasm", "wasmtime/"),
    ("sandbox: wasmtime C API + wasm", "edgefn/runtime/fastcall.py"),
    ("sandbox: Sandbox.run Python", "edgefn/runtime/sandbox.py"),
    ("sandbox: host calls (env_get)", "edgefn/runtime/linking.py"),
    ("invoker (report, module lookup)", "edgefn/runtime/"),
    ("edgefn pipeline", "edgefn/edge/pipeline.py"),
    ("edgefn pipeline", "edgefn/edge/cache.py"),
    ("edgefn pipeline", "edgefn/edge/rules.py"),
    ("edgefn app handler (edgefn/edge/app.py)", "edgefn/edge/"),
    ("Starlette", "starlette/"),
    ("aioquic (QUIC + HTTP/3)", "aioquic/"),
    ("cryptography (TLS, QUIC packet protection)", "cryptography/"),
    ("Hypercorn (+ h11 for HTTP/1.1)", "hypercorn/"),
    ("Hypercorn (+ h11 for HTTP/1.1)", "h11/"),
    ("uvicorn + httptools", "uvicorn/"),
    ("thread pool hop (concurrent.futures)", "concurrent/futures/"),
    ("asyncio event loop + transports", "asyncio/"),
    ("asyncio event loop + transports", "selectors.py"),
    ("baseline app", "edgefn/benchmark/baseline.py"),
]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def pyspy_bin() -> str:
    return str(Path(PYTHON).parent / "py-spy")


def record(pid: int, seconds: float, out: Path, cpus: str | None, rate: int = 250) -> subprocess.Popen:
    """Start py-spy on `pid` (non-blocking: the target is never paused); collapsed stacks go to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [pyspy_bin(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate),
           "--format", "raw", "--threads", "--nonblocking", "-o", str(out)]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def analyze(raw: Path, cpu_us_per_request: float | None = None, top: int = 15) -> dict:
    by_component: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    logging_callers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = re.sub(r"_\d+$", "", parts[0].split(": ", 1)[-1]) if parts else "?"
        frames = [m.groupdict() for p in parts[1:] if (m := _FRAME.match(p))]
        total += n
        by_thread[thread] += n
        comp = "other"
        for i, f in enumerate(reversed(frames)):
            hit = next((c for c, frag in COMPONENTS if frag in f["file"]), None)
            if hit:
                comp = hit
                if hit.startswith("logging") or hit.startswith("json"):
                    caller = next((g for g in reversed(frames[: len(frames) - i - 1]) if "edgefn/" in g["file"]), None)
                    logging_callers[f"{hit} <- {caller['func'] if caller else 'outside edgefn'}"] += n
                break
        by_component[comp] += n
        if frames:
            leaf = frames[-1]
            self_time[f"{leaf['func']} ({leaf['file']})"] += n
    share = {k: v / total for k, v in by_component.most_common()} if total else {}
    result: dict = {
        "samples": total,
        "share_by_component": share,
        "share_by_thread": {k: v / total for k, v in by_thread.most_common()} if total else {},
        "logging_and_json_by_caller": {k: v / total for k, v in logging_callers.most_common()} if total else {},
        "top_self": [(k, v / total) for k, v in self_time.most_common(top)] if total else [],
        "raw": _gzip(raw),
    }
    if cpu_us_per_request:
        result["cpu_us_per_request"] = cpu_us_per_request
        result["us_per_request_by_component"] = {k: v * cpu_us_per_request for k, v in share.items()}
    return result


def profile_server(server, url: str, connections: int, seconds: float, lg_cpus: str | None, name: str, driver=None) -> dict:  # type: ignore[no-untyped-def]
    """py-spy on `server` while wrk (or `driver(url, connections, seconds, cpus, server)`) drives `url`."""
    import load

    raw = PROFILES / f"{name}.pyspy.txt"
    spy = record(server.proc.pid, seconds, raw, lg_cpus)
    time.sleep(0.5)  # py-spy attaches
    res = (driver or load.wrk)(url, connections, max(1, seconds - 1), lg_cpus, server)
    out, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        log(f"py-spy failed for {name}: {out[-500:]}")
        return {"error": out[-2000:]}
    cpu_per_req = res["server_cpu"] / res["rps"] * 1e6 if res["rps"] else None
    analysis = analyze(raw, cpu_per_req)
    analysis["load"] = {k: res.get(k) for k in ("connections", "rps", "p50_us", "p99_us", "server_cpu", "client_cpu", "other_cpu", "noise")}
    analysis["note"] = "throughput while profiled (py-spy costs a little); shares are of on-CPU samples"
    return analysis


def pyinstrument_invoke(loops: int = 3000) -> dict:
    """pyinstrument over a loop of Invoker.invoke_sync on the small guest (fresh instance each time)."""
    import logging
    import shutil
    import tempfile

    import guests
    import micro
    from common import TMP
    from pyinstrument import Profiler

    from edgefn.core.app import FunctionSpec
    from edgefn.runtime.invoker import Runtime

    g = guests.small()
    root = Path(tempfile.mkdtemp(prefix="pyinstr-", dir=TMP))
    logging.disable(logging.CRITICAL)
    try:
        with Runtime(root, workers=1) as rt:
            fn = FunctionSpec(g.name, rt.store.add(g.wasm), micro.LIMITS, g.env)
            event = micro.typical_event(g.name)
            rt.invoker.invoke_sync(fn, event)
            prof = Profiler(interval=0.0001)
            prof.start()
            for _ in range(loops):
                rt.invoker.invoke_sync(fn, event)
            prof.stop()
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(root, ignore_errors=True)
    text = prof.output_text(unicode=True, color=False, show_all=False)
    out = PROFILES / "invoke_small.pyinstrument.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return {"file": str(out), "loops": loops}


#: startup phases, checked in order against the whole main-thread stack (inclusive)
STARTUP_PHASES: list[tuple[str, list[str]]] = [
    ("Python imports", ["_find_and_load"]),
    ("zig build again, in the app lifespan (open_app)", ["build_app (edgefn/build/app.py", "open_app (edgefn/build/app.py"]),
    ("zig build, in serve() before binding", ["build_app (edgefn/build/app.py", "serve (edgefn/server.py"]),
    ("module store: compile + write artifact", ["_compile (edgefn/runtime/module_store.py"]),
    ("module store: read + verify + deserialize + link", ["ModuleStore.load (edgefn/runtime/module_store.py"]),
    ("Runtime() (engine, linker, ticker)", ["Runtime.__init__ (edgefn/runtime/invoker.py"]),
    ("outbound client TLS setup", ["shared_client (edgefn/runtime/outbound.py"]),
    ("manifest load", ["load_manifest (edgefn/manifest/load.py"]),
    ("Hypercorn startup + serving", ["hypercorn/"]),
]


def analyze_startup(raw: Path, rate: int) -> dict:
    """Main-thread time of a server start by phase (ms), from a py-spy --idle profile of the whole process."""
    phases: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "MainThread" not in stack.split(";", 1)[0]:
            continue
        n = int(count)
        total += n
        phase = next((name for name, marks in STARTUP_PHASES if all(m in stack for m in marks)), "other")
        phases[phase] += n
    return {"main_thread_ms": total / rate * 1000, "ms_by_phase": {k: v / rate * 1000 for k, v in phases.most_common()}, "raw": _gzip(raw)}


def _gzip(raw: Path) -> str:
    """Keep the collapsed stacks (flamegraph.pl / speedscope input) compressed: `zcat FILE | flamegraph.pl`."""
    gz = raw.with_name(raw.name + ".gz")
    with open(raw, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    return str(gz.relative_to(PROFILES.parent.parent.parent))


def profile_startup(cmd: list[str], port: int, name: str, rate: int = 500) -> dict:
    """Run `cmd` (a server) under py-spy from its first instruction until /_edgefn/health answers."""
    import httpx
    import psutil

    raw = PROFILES / f"{name}.pyspy.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([pyspy_bin(), "record", "--idle", "--threads", "--rate", str(rate), "--format", "raw", "-o", str(raw), "--", *cmd],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.perf_counter()
    healthy_s = None
    try:
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() - t0 < 120 and spy.poll() is None:
                try:
                    if client.get(f"http://127.0.0.1:{port}/_edgefn/health").status_code == 200:
                        healthy_s = time.perf_counter() - t0
                        break
                except httpx.HTTPError:
                    time.sleep(0.01)
    finally:
        for child in psutil.Process(spy.pid).children():
            child.terminate()
        out, _ = spy.communicate(timeout=60)
    if not raw.exists():
        return {"error": out[-2000:]}
    res = analyze_startup(raw, rate)
    res["spawn_to_healthy_s_under_pyspy"] = healthy_s
    return res
