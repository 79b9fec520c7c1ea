"""One benchmark run of a user's app: build it, measure each function in process, then over HTTP against the baseline."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..app_build import build_app, store_dir_of
from ..control.layers import fetch_manifest_layers
from ..core.exceptions import ManifestError
from ..manifest.load import load_manifest
from ..runtime.invoker import Runtime
from .inprocess import measure_function
from .load import Generator, have_wrk
from .overhttp import http_targets, measure_http

__all__ = ["BenchPlan", "cpu_sets", "machine", "run_bench"]


@dataclass(frozen=True)
class BenchPlan:
    """What `edgefn bench` measures."""

    config: Path
    #: the functions to measure (empty: every function of the manifest)
    functions: tuple[str, ...] = ()
    #: seconds of each load run over HTTP; each in-process series takes a quarter of it (at most 3 s), compiles half
    duration_s: float = 10.0
    concurrency: tuple[int, ...] = (1, 16)
    generator: Generator = "auto"
    in_process: bool = True
    http: bool = True
    #: ("Name", "value") pairs sent with every HTTP request (a token an auth hook wants)
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def series_budget_s(self) -> float:
        return max(0.2, min(3.0, self.duration_s / 4))

    @property
    def compile_budget_s(self) -> float:
        return max(0.2, min(10.0, self.duration_s / 2))


def cpu_sets() -> tuple[str | None, str | None]:
    """(load generator CPUs, server CPUs): CPU 0 and the rest when there are 2 or more and taskset exists, else unpinned."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n >= 2 and shutil.which("taskset") and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        return str(cpus[0]), ",".join(str(c) for c in cpus[1:])
    return None, None


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "cpu_model": model or platform.processor(), "kernel": platform.release(), "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }
    for pkg in ("wasmtime", "hypercorn", "starlette"):
        try:
            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - reported as unknown, not fatal
            info[pkg] = None
    return info


def run_bench(plan: BenchPlan, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build the app of `plan.config` into its module store and measure it; returns the run's JSON document."""
    config = plan.config.resolve()
    manifest = load_manifest(config)
    unknown = [n for n in plan.functions if n not in manifest.functions]
    if unknown:
        raise ManifestError(config, f"functions.{unknown[0]}", "no such function", f"pick from: {', '.join(sorted(manifest.functions))}")
    names = list(plan.functions or manifest.functions)
    client_cpus, server_cpus = cpu_sets()
    generator: Generator = "wrk" if plan.generator == "wrk" or (plan.generator == "auto" and have_wrk()) else "builtin"
    doc: dict[str, Any] = {
        "app": manifest.app.name, "config": str(config), "edgefn": __version__, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
        "plan": {"functions": names, "headers": [k for k, _ in plan.headers], "duration_s": plan.duration_s, "concurrency": list(plan.concurrency), "series_budget_s": plan.series_budget_s,
                 "compile_budget_s": plan.compile_budget_s},
        "load_generator": generator, "pinning": {"load_generator_cpus": client_cpus, "server_cpus": server_cpus},
        "functions": {}, "no_http": {},
    }
    progress(f"building {manifest.app.name}")
    phases: dict[str, float] = {}
    doc["phase_s"] = phases
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="edgefn-bench-"))
    try:
        fetch_manifest_layers(config, manifest)
        with Runtime(store_dir_of(config, manifest), workers=1) as runtime:
            app = build_app(config, manifest, runtime.store)
            phases["build"] = time.perf_counter() - t0
            if plan.in_process:
                for name in names:
                    cost = measure_function(app, runtime.store, name, plan.series_budget_s, plan.compile_budget_s, scratch=scratch, progress=progress)
                    doc["functions"][name] = cost.document()
                phases["in_process"] = time.perf_counter() - t0 - phases["build"]
        if plan.http:
            t1 = time.perf_counter()
            targets, doc["no_http"] = http_targets(app, names, plan.headers)
            if targets:
                http = measure_http(
                    app, targets, concurrency=list(plan.concurrency), duration_s=plan.duration_s, generator=generator, workdir=scratch,
                    server_cpus=server_cpus, client_cpus=client_cpus, progress=progress,
                )
                http["targets"] = [{"path": t.path, "headers": [k for k, _ in t.headers], "behavior": t.behavior, "functions": list(t.functions)} for t in targets]
                doc["http"] = http
            phases["http"] = time.perf_counter() - t1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return doc
