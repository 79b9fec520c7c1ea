"""Run a real `edgefn serve` (Hypercorn) on 127.0.0.1 in a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def edge_server(config: Path, *extra: str, startup_timeout: float = 180.0) -> Iterator[tuple[str, Path]]:
    """Yield (base URL, log file) of a server serving `config`; stop it with SIGTERM afterwards."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="edgefn-server-", suffix=".log")[1])
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefn.cli", "serve", "--config", str(config), "--port", str(port), *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"edgefn serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/_edgefn/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"edgefn serve did not become healthy in {startup_timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield base, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
