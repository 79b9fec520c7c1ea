"""Cold and warm, in process: what one function costs from an empty store to a warm instance, invocation by invocation.

Four series per function, each a distribution of single-invocation timings (µs), on a Runtime of its own whose
module store is a scratch copy of the app's (the app's own store is never touched):

- `cold_compile`: from an empty module store: compile the wasm, write the artifact, instantiate, invoke;
- `cold_artifact`: from an empty in-memory cache: read and deserialize the artifact, instantiate, invoke
  (what a node's first request to a function costs after a restart; Lambda's "Init Duration");
- `warm_fresh`: the module ready in memory, a fresh instance per invocation (edgefn's default);
- `warm_reused`: an instance kept between invocations (`reuse_instances = true`), unless the function fails
  on a reused instance, which the figures then say.

The function's own log lines are not written (the server pays for its log output; the HTTP figures hold it).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..control.store import open_kv_store
from ..core.app import FunctionSpec, ResolvedApp
from ..core.events import Event, sample_event
from ..core.exceptions import EdgefnError
from ..runtime.invoker import Runtime, function_logger
from ..runtime.module_store import ModuleStore
from .stats import ladder, sample_us, summarize

__all__ = ["SERIES", "FunctionCost", "measure_code", "measure_function", "trigger_of"]

#: the in-process series, in the order they run and are shown
SERIES: tuple[str, ...] = ("cold_compile", "cold_artifact", "warm_fresh", "warm_reused")


@dataclass
class FunctionCost:
    """One function's in-process figures."""

    function: str
    kind: str  # "module" (a core wasm module) or "component"
    trigger: str  # the event type it was invoked with
    wasm_bytes: int
    reuse_configured: bool
    #: series name -> {"summary": summarize(µs), "ladder": ladder(µs)}; a series that could not run is absent
    series: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: series name -> why it did not run
    skipped: dict[str, str] = field(default_factory=dict)
    #: from the REPORT data of the warm invocations: fuel used and peak linear memory
    fuel: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int = 0
    memory_mb: int = 0

    def document(self) -> dict[str, object]:
        return {
            "function": self.function, "kind": self.kind, "trigger": self.trigger, "wasm_bytes": self.wasm_bytes, "reuse_configured": self.reuse_configured,
            "series": self.series, "skipped": self.skipped, "fuel": self.fuel, "peak_memory_bytes": self.peak_memory_bytes, "memory_mb": self.memory_mb,
        }


def trigger_of(app: ResolvedApp, function: str) -> str:
    """The event type `function` gets in the app: its first hook's, else origin-request (a function as the origin)."""
    for behavior in app.behaviors:
        for event_type, hook in behavior.hooks.items():
            if hook.function == function:
                return event_type
    return "origin-request"


def measure_function(
    app: ResolvedApp, store: ModuleStore, name: str, budget_s: float, compile_budget_s: float, *, scratch: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> FunctionCost:
    """The four series of `name` (built into `store`) with the event its trigger gets, each for about `budget_s`
    seconds (compiles: `compile_budget_s`, at least one)."""
    spec = app.functions[name]
    event = sample_event(trigger_of(app, name), "bench-request")
    event.config = replace(event.config, function_name=name)
    return measure_code(spec, store.wasm_path(spec.digest).read_bytes(), event, budget_s, compile_budget_s, scratch=scratch, progress=progress)


def measure_code(
    spec: FunctionSpec, wasm: bytes, event: Event, budget_s: float, compile_budget_s: float, *, scratch: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> FunctionCost:
    """The four series of the function `spec` whose code is `wasm`, invoked with `event` (bench/micro.py's guests too)."""
    name, trigger = spec.name, event.config.event_type
    root = Path(tempfile.mkdtemp(prefix="edgefn-bench-", dir=scratch))
    flog = function_logger(name)
    quiet = logging.NullHandler()
    flog.addHandler(quiet)
    was_propagating, flog.propagate = flog.propagate, False
    try:
        # a function with kv grants calls a scratch store of its own: the app's data is never read or written here
        scratch_kv = open_kv_store(root / "kv.db") if spec.kv_namespaces else None
        with Runtime(root / "store", workers=1, kv=scratch_kv) as runtime:
            mine = runtime.store
            digest = mine.add(wasm)
            assert digest == spec.digest, "a store's digest is the sha256 of the code"
            fresh = replace(spec, reuse_instances=False, prewarm=0)
            cost = FunctionCost(name, mine.kind_of(digest), trigger, len(wasm), spec.reuse_instances, memory_mb=spec.limits.memory_mb)
            fuel: list[float] = []
            peaks: list[int] = []

            def invoke(fn: FunctionSpec) -> None:
                done = runtime.invoker.invoke_sync(fn, event)
                fuel.append(done.report.fuel_used)
                peaks.append(done.report.peak_memory_bytes)

            def series(
                key: str, timed: Callable[[], None], budget: float, *, min_n: int, max_n: int, warmup: int, setup: Callable[[], None] | None = None,
            ) -> None:
                progress(f"{name}: {key.replace('_', ' ')}")
                try:
                    samples = sample_us(timed, budget_s=budget, min_n=min_n, max_n=max_n, warmup=warmup, setup=setup)
                except EdgefnError as exc:
                    cost.skipped[key] = str(exc)
                    return
                cost.series[key] = {"summary": summarize(samples), "ladder": ladder(samples)}

            def compile_and_invoke() -> None:
                mine.load(digest, name)
                invoke(fresh)

            series("cold_compile", compile_and_invoke, compile_budget_s, setup=lambda: mine.drop_artifacts(digest), min_n=1, max_n=20, warmup=0)
            series("cold_artifact", lambda: invoke(fresh), budget_s, setup=lambda: mine.evict(digest), min_n=3, max_n=500, warmup=1)
            fuel.clear()
            peaks.clear()
            series("warm_fresh", lambda: invoke(fresh), budget_s, min_n=10, max_n=50_000, warmup=10)
            if fuel:
                ordered = sorted(fuel)
                cost.fuel = {"p50": ordered[len(ordered) // 2], "max": ordered[-1]}
                cost.peak_memory_bytes = max(peaks)
            reused = replace(spec, reuse_instances=True, prewarm=0)
            series("warm_reused", lambda: invoke(reused), budget_s, min_n=10, max_n=50_000, warmup=10)
            if "warm_reused" in cost.skipped:
                cost.skipped["warm_reused"] = f"fails on a reused instance: {cost.skipped['warm_reused']}"
            return cost
    finally:
        flog.removeHandler(quiet)
        flog.propagate = was_propagating
        shutil.rmtree(root, ignore_errors=True)
