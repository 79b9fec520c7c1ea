"""Reload latency of `edgefn dev`: file saved → the next request is served by the new code.

    .venv/bin/python bench/reload.py [c|python ...]   # default: both; writes bench/results/reload.json

Scaffolds a project with `edgefn init --lang LANG`, runs `edgefn dev` on it, then saves a new version of
the viewer-response function N times and polls (every 2 ms) until a response carries the new header value.
The figure includes watchfiles' debounce, the build (zig, or componentize-py), precompiling into the
module store and the swap.
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

ROUNDS = {"c": 8, "python": 2}  # a Python component build + precompile takes tens of seconds


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
    source = app / "src" / f"viewer_response.{'c' if lang == 'c' else 'py'}"
    original = source.read_text()
    samples = []
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
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    return {
        "language": lang,
        "rounds": len(samples),
        "ms_min": min(samples),
        "ms_p50": statistics.median(samples),
        "ms_max": max(samples),
        "target_ms": 300 if lang == "c" else None,
    }


def main() -> None:
    langs = sys.argv[1:] or ["c", "python"]
    results = [measure(lang) for lang in langs]
    print(json.dumps(results, indent=2))
    write_json(RESULTS / "reload.json", results)


if __name__ == "__main__":
    main()
