"""Reload latency of `edgefn dev`: file saved → the next request is served by the new code.

    .venv/bin/python bench/reload.py [c|python|ts ...]   # default: all three; writes bench/results/reload.json

Scaffolds a project with `edgefn init --lang LANG`, runs `edgefn dev` on it, then saves a new version of
the viewer-response function N times and polls (every 2 ms) until a response carries the new header value.
The figure includes watchfiles' debounce, the build (zig; for Python the dev runtime's import check),
precompiling into the module store and the swap. Python also measures a syntax error: saved → the broken
build is reported (GET /_edgefn/dev/builds), five times.

Baselines, measured in the same run: for C the compiler alone on the same file (what no dev loop can beat);
for Python what a save cost before the dev runtime, a production build of the changed function
(componentize-py + precompile, `edgefn build FILE` into a fresh store).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import REPO, RESULTS, write_json

ROUNDS = {"c": 12, "python": 12, "ts": 12}
TARGET_MS = {"c": 300, "python": 1000, "ts": 1000}
SUFFIX = {"c": "c", "python": "py", "ts": "ts"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(lang: str) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="edgefn-reload-"))
    app = root / "app"
    subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "init", str(app), "--lang", lang, "--triggers", "viewer-response"],
        check=True, cwd=REPO, capture_output=True,
    )
    port = free_port()
    env = dict(os.environ, EDGEFN_CACHE_DIR=str(REPO / ".cache"), PYTHONUNBUFFERED="1")
    log = open(root / "dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefn.cli", "dev", "-c", str(app / "edgefn.toml"), "--port", str(port), "--tls-port", "0", "--admin-port", "0"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/"
    source = app / "src" / f"viewer_response.{SUFFIX[lang]}"
    original = source.read_text()
    samples: list[float] = []
    syntax: list[float] = []
    try:
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 900
            while True:
                try:
                    if client.get(base).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("edgefn dev did not start")
                time.sleep(0.05)
            for i in range(ROUNDS[lang] + 1):
                value = f"v{i}-{time.time_ns()}"
                source.write_text(original.replace('"seen"', f'"{value}"'))
                saved = time.perf_counter()
                while client.get(base).headers.get("x-viewer-response") != value:
                    time.sleep(0.002)
                if i:  # the first round warms the toolchain's caches for this file
                    samples.append((time.perf_counter() - saved) * 1000)
                time.sleep(0.3)
            if lang == "python":
                builds = base + "_edgefn/dev/builds"
                for i in range(5):
                    source.write_text(original.replace("def viewer_response(response: Response):", f"def viewer_response(response: Response)  # {i}"))
                    saved = time.perf_counter()
                    while "viewer-response" not in client.get(builds).json()["broken"]:
                        time.sleep(0.002)
                    syntax.append((time.perf_counter() - saved) * 1000)
                    source.write_text(original)
                    while client.get(builds).json()["broken"]:
                        time.sleep(0.01)
                    time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    baseline = _baseline(lang, app, source, original)
    out: dict[str, object] = {
        "language": lang,
        "rounds": len(samples),
        "ms_min": min(samples),
        "ms_p50": statistics.median(samples),
        "ms_max": max(samples),
        "target_ms": TARGET_MS[lang],
        "baseline": baseline,
        "p50_over_baseline": statistics.median(samples) / baseline["ms_p50"],
    }
    if syntax:
        out["syntax_error_ms_p50"] = statistics.median(syntax)
        out["syntax_error_ms_max"] = max(syntax)
        out["syntax_error_target_ms"] = 300
    return out


def _baseline(lang: str, app: Path, source: Path, original: str) -> dict[str, object]:
    """C: the compiler alone on the same file (3 runs). Python: one production build of the changed function.
    TypeScript: esbuild's bundle of the changed function alone (3 runs), the first of the build's two steps."""
    env = dict(os.environ, EDGEFN_CACHE_DIR=str(REPO / ".cache"))
    times = []
    for i in range(3 if lang in ("c", "ts") else 1):
        source.write_text(original.replace('"seen"', f'"base{i}-{time.time_ns()}"'))
        if lang == "ts":
            code = (
                "import sys, tempfile; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
                "from edgefn.build.js import bundle\n"
                "with tempfile.TemporaryDirectory() as d: bundle(Path(sys.argv[2]), Path(d))\n"
            )
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(REPO), str(source)], check=True, env=env, capture_output=True)
        elif lang == "c":
            sys.path.insert(0, str(REPO))
            from edgefn.build.toolchain import SDK_C_DIR, cache_dir, zig_command

            cmd = [*zig_command(), "cc", "--target=wasm32-freestanding", "-Oz", "-s", "-nostdlib", "-mbulk-memory", "-Wl,--no-entry",
                   "-Wl,--strip-all", "-I", str(SDK_C_DIR), str(source), "-o", str(app / "baseline.wasm")]
            zenv = dict(env, ZIG_GLOBAL_CACHE_DIR=str(cache_dir()), ZIG_LOCAL_CACHE_DIR=str(cache_dir() / "local"))
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=zenv, capture_output=True)
        else:  # the changed function alone: its component built and precompiled, as each save was before
            code = (
                "import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
                "from edgefn.build.languages import build_source\nfrom edgefn.build.toolchain import cache_dir\n"
                "from edgefn.runtime.invoker import Runtime\n"
                "wasm = build_source(Path(sys.argv[2]), Path(sys.argv[3]), 'freestanding', cache_dir())\n"
                "rt = Runtime(Path(sys.argv[4])); rt.store.load(rt.store.add(wasm), 'baseline'); rt.close()\n"
            )
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(REPO), str(source), str(app / "baseline.wasm"), str(app / f"baseline-store-{i}")],
                           check=True, env=env, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    source.write_text(original)
    what = {
        "c": "zig cc -Oz alone on the same file",
        "python": "a production build of the changed function (componentize-py + precompile)",
        "ts": "esbuild's bundle of the changed function alone (a new interpreter each run, as the build's subprocess)",
    }[lang]
    return {"what": what, "runs": len(times), "ms_p50": statistics.median(times)}


def main() -> None:
    langs = sys.argv[1:] or ["c", "python", "ts"]
    results = [measure(lang) for lang in langs]
    print(json.dumps(results, indent=2))
    try:  # a run of some languages keeps the others' last figures
        kept = [r for r in json.loads((RESULTS / "reload.json").read_text()) if r["language"] not in langs]
    except (OSError, ValueError):
        kept = []
    write_json(RESULTS / "reload.json", kept + results)


if __name__ == "__main__":
    main()
