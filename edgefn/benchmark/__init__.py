"""`edgefn bench`: cold vs warm latency and throughput of an app's own functions, against a baseline measured in the same run.

    run.py        BenchPlan -> run_bench(): build, in process, over HTTP; one JSON document
    inprocess.py  cold (compile, artifact) and warm (fresh, reused instance) invocations, per function
    overhttp.py   a real `edgefn serve` and the baseline on loopback: first request, load runs, Server-Timing
    load.py       the load generators: wrk, else the built-in closed-loop client (client.py), its own CPU reported
    processes.py  server processes: free port, health wait, CPU from /proc, process-group stop
    baseline.py   the baseline: a plain Starlette hello on edgefn's Hypercorn settings
    report.py     the terminal table and the self-contained HTML page
    stats.py rawhttp.py   percentiles and timed loops; a raw-socket HTTP/1.1 client

bench/ (the repository's `make bench`) measures its edgefn rows with these same modules.
"""

from __future__ import annotations

from typing import Any

from .load import LoadRun, run_load

__all__ = ["BenchPlan", "LoadRun", "run_bench", "run_load"]


def __getattr__(name: str) -> Any:
    # run.py pulls in the build and the runtime (~0.1 s): only `edgefn bench` pays for it, not every CLI command
    if name in ("BenchPlan", "run_bench"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
