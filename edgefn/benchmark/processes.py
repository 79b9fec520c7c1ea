"""The servers a benchmark starts: one process group each, on a free loopback port, with its CPU time read from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.exceptions import BenchError
from .load import pinned
from .rawhttp import Connection

__all__ = ["ServerProcess", "baseline_server", "edgefn_server", "free_port"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """One server (and its worker processes) in a process group of its own, killed whole by `stop`."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    cpus: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: seconds from spawn to the health endpoint's first 200
    start_s: float = 0.0
    _t0: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> "ServerProcess":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._t0 = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                pinned(self.cmd, self.cpus), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.cwd, start_new_session=True,
            )
        return self

    def wait_healthy(self, path: str, timeout_s: float) -> "ServerProcess":
        """Poll `path` on new connections until it answers 200; an exit or the deadline raises, with the log's end."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with Connection("127.0.0.1", self.port, timeout=2.0) as conn:
                    if conn.get(path)[0] == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer {path} within {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.01)
        self.start_s = time.perf_counter() - self._t0
        return self

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The server's process and every descendant (Hypercorn's workers)."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the server's processes that are alive now."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total / _TICK

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their parent
            except ProcessLookupError:
                pass


def edgefn_server(config: Path, log: Path, workers: int | None = None, cpus: str | None = None) -> ServerProcess:
    """`edgefn serve` of `config` on a free port: no TLS, no admin listener."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgefn", "serve", "--config", str(config), "--port", str(port), "--tls-port", "0", "--admin-port", "0", "-q"]
    if workers:
        cmd += ["--workers", str(workers)]
    return ServerProcess("edgefn serve", cmd, port, log, cpus, cwd=config.parent)


def baseline_server(log: Path, workers: int = 1, cpus: str | None = None) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "edgefn.benchmark.baseline", "--port", str(port), "--workers", str(workers)]
    return ServerProcess("baseline (Starlette on Hypercorn)", cmd, port, log, cpus)
