"""The HTTP load generators: wrk when installed, else a bounded built-in client; both closed loop.

Each connection sends its next request when the last response is in. Either runs as a child process (pinned to
its own CPUs when given), so its own CPU use is measured exactly (`client_cpu`, in cores) and printed beside the
figures: a client near 1.0 was the bottleneck, not the server.
The built-in client is edgefn/benchmark/client.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Literal

from ..core.exceptions import BenchError
from .stats import LADDER

__all__ = ["GENERATORS", "LoadRun", "have_wrk", "pinned", "run_load"]

Generator = Literal["auto", "wrk", "builtin"]
GENERATORS: tuple[str, ...] = ("auto", "wrk", "builtin")

#: wrk's reporter: one JSON line with the summary, errors and LADDER's percentiles (µs)
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"non_2xx":%d,' ..
    '"latency":{"min":%d,"max":%d,"mean":%.2f,"percentiles":{',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status, latency.min, latency.max, latency.mean)
  for i, p in ipairs({LADDER}) do
    out = out .. string.format('"%g":%d,', p, latency:percentile(p))
  end
  out = out .. string.format('"0":%d,"100":%d', latency.min, latency.max)  -- percentile(100) is 0 in wrk 4.1
  io.write("LOAD_JSON " .. out .. "}}}\\n")
end
""".replace("{LADDER}", "{" + ", ".join(f"{p:g}" for p in LADDER if 0 < p < 100) + "}")


@dataclass(frozen=True)
class LoadRun:
    """One load run against one URL."""

    generator: str  # "wrk" or "builtin"
    connections: int
    seconds: float
    requests: int
    #: latency distribution (µs) at LADDER's percentiles, "50" -> µs
    latency_us: dict[str, float]
    #: responses that were not 2xx or 3xx, and failed connects/reads/writes/timeouts
    non_2xx: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: cores the load generator itself used meanwhile (1.0: one core saturated)
    client_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50_us(self) -> float:
        return self.latency_us.get("50", float("nan"))

    @property
    def p99_us(self) -> float:
        return self.latency_us.get("99", float("nan"))

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.errors.values())

    def document(self) -> dict[str, object]:
        return {
            "generator": self.generator, "connections": self.connections, "seconds": self.seconds, "requests": self.requests, "rps": self.rps,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "latency_us": self.latency_us, "non_2xx": self.non_2xx, "errors": self.errors,
            "failed": self.failed, "client_cpu": self.client_cpu,
        }


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """`cmd` run on `cpus` only (taskset), when given."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def run_load(
    url: str, connections: int, duration_s: float, *, generator: Generator = "auto", cpus: str | None = None, headers: tuple[tuple[str, str], ...] = (),
) -> LoadRun:
    """Load `url` with `connections` closed-loop connections for `duration_s` seconds; `auto` is wrk if installed."""
    use = "wrk" if generator == "wrk" or (generator == "auto" and have_wrk()) else "builtin"
    if use == "wrk" and not have_wrk():
        raise BenchError("wrk is not installed (Debian: apt-get install wrk); or use --load-generator builtin")
    with tempfile.TemporaryDirectory(prefix="edgefn-load-") as tmp:
        if use == "wrk":
            script = os.path.join(tmp, "report.lua")
            with open(script, "w") as f:
                f.write(WRK_SCRIPT)
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s", "-s", script]
            cmd += [arg for k, v in headers for arg in ("-H", f"{k}: {v}")] + [url]
        else:
            cmd = [sys.executable, "-m", "edgefn.benchmark.client", url, "-c", str(connections), "-d", str(duration_s)]
            cmd += [arg for k, v in headers for arg in ("-H", f"{k}: {v}")]
        out_path = os.path.join(tmp, "out")
        with open(out_path, "w+") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(pinned(cmd, cpus), stdout=out, stderr=subprocess.STDOUT)
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            out.seek(0)
            text = out.read()
    line = next((ln for ln in text.splitlines() if ln.startswith("LOAD_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"{use} failed (exit {proc.returncode}): {text[-1500:]}")
    doc = json.loads(line[len("LOAD_JSON ") :])
    lat = {k: float(v) for k, v in doc["latency"]["percentiles"].items()}
    return LoadRun(
        use, connections, doc["duration_us"] / 1e6, doc["requests"], dict(sorted(lat.items(), key=lambda kv: float(kv[0]))),
        doc["non_2xx"], {k: int(v) for k, v in doc["errors"].items() if v}, (usage.ru_utime + usage.ru_stime) / wall,
    )
