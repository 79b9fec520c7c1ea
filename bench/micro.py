"""In-process micro benchmarks: compile, load from the store, fresh-instance and reused-instance invocations.

Every figure is a distribution of single-operation timings (µs): min / p50 / p99. The guests are those of
guests.py (small = examples/hello in C, medium = a generated ~1 MB module, floor = the smallest v1 guest).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import fastpath
import guests
import wasmtime
from common import TMP, log, sample_us, summarize

from edgefn.benchmark.inprocess import measure_code
from edgefn.core import events
from edgefn.core.app import FunctionSpec, Limits
from edgefn.core.events import EdgeRequest, Event, EventConfig
from edgefn.runtime import abi, fastcall  # noqa: E402
from edgefn.runtime.context import InvocationContext, set_current_context
from edgefn.runtime.invoker import Runtime

#: the limits of examples/hello's manifest entry (the bench's edgefn servers use the same)
LIMITS = Limits(memory_mb=16, timeout_ms=1000, fuel=50_000_000, max_result_bytes=65536)


def typical_event(function: str) -> Event:
    """An origin-request event for GET / with the headers a browser-like client sends (8 headers)."""
    names = {
        "host": "127.0.0.1:8787",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-encoding": "gzip, deflate, br",
        "accept-language": "en-US,en;q=0.5",
        "connection": "keep-alive",
        "cache-control": "no-cache",
        "x-forwarded-for": "203.0.113.7",
    }
    headers = {k: [(events.title_case(k), v)] for k, v in names.items()}
    return Event(EventConfig("origin-request", "bench-request-id", function), EdgeRequest("GET", "/", "", headers, "127.0.0.1"))


def _budget(quick: bool, seconds: float) -> float:
    return seconds / 3 if quick else seconds * 0.6


def run(quick: bool = False) -> dict:
    logging.disable(logging.CRITICAL)  # the START/END/REPORT lines: the server pays them, measured end to end
    root = Path(tempfile.mkdtemp(prefix="micro-", dir=_tmp()))
    out: dict = {"guests": {}, "limits": vars(LIMITS), "event_headers": 8}
    try:
        with Runtime(root / "store", workers=1) as rt:
            for guest in (guests.small(), guests.medium(), guests.floor()):
                log(f"micro: {guest.name} ({guest.describe})")
                out["guests"][guest.name] = _guest(rt, guest, quick)
            out["breakdown_small"] = breakdown(rt, guests.small(), quick)
            out["host_call"] = host_call_cost(rt, quick)
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(root, ignore_errors=True)
    return out


def _tmp() -> Path:
    TMP.mkdir(parents=True, exist_ok=True)
    return TMP


def _guest(rt: Runtime, guest: guests.Guest, quick: bool) -> dict:
    engine = rt.engine
    wasm = guest.wasm
    digest = rt.store.add(wasm)
    fn = FunctionSpec(guest.name, digest, LIMITS, guest.env)
    event = typical_event(guest.name)
    encoded = abi.encode_event(event)
    big = len(wasm) > 100_000
    res: dict = {"describe": guest.describe, "wasm_bytes": len(wasm)}

    # 1. compile from wasm (what a store miss costs; edgefn does it once per deploy, at build time)
    compile_us = sample_us(lambda: wasmtime.Module(engine, wasm), budget_s=_budget(quick, 2.0 if big else 0.8), min_n=3 if big else 10, max_n=300, warmup=1)
    res["compile"] = summarize(compile_us)

    # 2. load from the on-disk store: read + header/sha256 check + Module.deserialize + inspect + instantiate_pre
    rt.store.load(digest, guest.name)  # writes the artifact
    res["artifact_bytes"] = rt.store.artifact_path(digest).stat().st_size

    def evict() -> None:
        rt.store.evict(digest)

    res["store_load_disk"] = summarize(
        sample_us(lambda: rt.store.load(digest, guest.name), setup=evict, budget_s=_budget(quick, 0.8), min_n=10, max_n=500)
    )
    # the deserialize alone, from bytes (what the store does) and memory-mapped from a file (what it could do)
    payload = wasmtime.Module(engine, wasm).serialize()  # the bare payload, without edgefn's artifact header
    raw = _tmp() / f"{guest.name}.cwasm"
    raw.write_bytes(payload)
    res["deserialize_bytes"] = summarize(sample_us(lambda: wasmtime.Module.deserialize(engine, payload), budget_s=_budget(quick, 0.4), min_n=10, max_n=500))
    res["deserialize_file_mmap"] = summarize(
        sample_us(lambda: wasmtime.Module.deserialize_file(engine, str(raw)), budget_s=_budget(quick, 0.4), min_n=10, max_n=500)
    )
    raw.unlink()

    # 3. edgefn's own series (edgefn bench measures every user function with the same code): cold from an empty
    #    store (compile) and from an artifact, warm on a fresh and on a reused instance, each a whole invoke_sync
    cost = measure_code(fn, wasm, event, _budget(quick, 1.0), _budget(quick, 1.5 if big else 0.6), scratch=_tmp())
    assert not cost.skipped, cost.skipped
    res["cold_start_with_compile"] = cost.series["cold_compile"]["summary"]
    res["cold_start_from_artifact"] = cost.series["cold_artifact"]["summary"]
    res["fresh_instance_invoke"] = cost.series["warm_fresh"]["summary"]
    res["warm_instance_invoke"] = cost.series["warm_reused"]["summary"]
    rt.store.load(digest, guest.name)

    # 4. one invocation on a fresh instance (the module is ready in memory): the sandbox alone, and the whole
    #    invoke_sync (CBOR encode + sandbox + decode + report)
    loaded, _ = rt.store.load(digest, guest.name)

    def sandbox_run() -> None:
        r = rt.sandbox.run(
            loaded, function=guest.name, request_id="r", event=encoded, limits=LIMITS, env=guest.env, emit=_drop
        )
        assert r.error is None, r.error

    res["fresh_instance_sandbox"] = summarize(sample_us(sandbox_run, budget_s=_budget(quick, 1.5), min_n=50, max_n=20000, warmup=50))
    # the physical floor of the same steps: raw C-API calls only (bench/fastpath.RawFresh), same engine
    from edgefn.runtime.context import InvocationContext as _Ctx

    floor = fastpath.RawFresh(rt.engine, loaded.pre, loaded.info, LIMITS.fuel, rt.ticker.ticks_for(LIMITS.timeout_ms))
    set_current_context(_Ctx(guest.name, "r", {k: v.encode() for k, v in guest.env.items()}, _drop))  # the guest's env_get
    try:
        assert floor.invoke(encoded)
        res["fresh_instance_raw_floor"] = summarize(sample_us(lambda: floor.invoke(encoded), budget_s=_budget(quick, 1.0), min_n=50, max_n=20000, warmup=50))
    finally:
        set_current_context(None)
    # 5. a second invocation on the same instance. The runtime does not reuse instances yet: this is a raw
    #    call sequence through fastcall (alloc, write the event, handle, read the result) on one Store.
    warm = _warm_runtime(rt, loaded, fn, guest, encoded, event, quick)
    if warm:
        res.update(warm)
    raw, lean = _reused(rt, loaded, guest, encoded, quick)
    res["reused_instance_raw"] = summarize(raw)
    res["reused_instance_lean_prototype"] = summarize(lean)
    return res


def _drop(level: int, message: str) -> None:
    pass


def _warm_runtime(rt: Runtime, loaded, fn: FunctionSpec, guest: guests.Guest, encoded: bytes, event: Event, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    """The runtime's own warm path, when this tree has it (FunctionSpec.reuse_instances): {} otherwise."""
    if "reuse_instances" not in FunctionSpec.__dataclass_fields__:
        return {}
    from dataclasses import replace

    wfn = replace(fn, reuse_instances=True)  # type: ignore[call-arg]
    pool = rt.invoker.pool_of(wfn)

    def sandbox_warm() -> None:
        r = rt.sandbox.run(loaded, function=guest.name, request_id="r", event=encoded, limits=LIMITS, env=guest.env, emit=_drop, pool=pool)
        assert r.error is None and r.report.warm, r.error
        pool.give(r.instance)

    first = rt.sandbox.run(loaded, function=guest.name, request_id="r", event=encoded, limits=LIMITS, env=guest.env, emit=_drop, pool=pool)
    pool.give(first.instance)
    return {"warm_instance_sandbox": summarize(sample_us(sandbox_warm, budget_s=_budget(quick, 1.0), min_n=50, max_n=20000, warmup=20))}


def _reused(rt: Runtime, loaded, guest: guests.Guest, encoded: bytes, quick: bool) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    store = wasmtime.Store(rt.engine)
    store.set_fuel(10**15)
    store.set_limits(memory_size=LIMITS.memory_mb << 20)
    store.set_epoch_deadline(10**9)
    info = loaded.info
    ctx = InvocationContext(guest.name, "r", {k: v.encode() for k, v in guest.env.items()}, _drop)
    set_current_context(ctx)
    try:
        instance = fastpath.instantiate(store, loaded.pre)
        memory = fastpath.memory(store, fastpath.export(store, instance, info.memory_export))
        alloc = fastpath.export(store, instance, info.alloc_export)
        handle = fastpath.export(store, instance, info.handle_export)
        n = len(encoded)

        def call() -> None:
            ptr = fastpath.call(store, alloc, (n,), fastpath.I32)
            memory.write(ptr, encoded)
            packed = fastpath.call(store, handle, (ptr, n), fastpath.I64)
            result = memory.read(packed >> 32, packed & 0xFFFFFFFF)
            assert result

        call()  # the first call on the instance is not a "second call"
        raw = sample_us(call, budget_s=_budget(quick, 0.8), min_n=50, max_n=50000, warmup=50)
        lean = fastpath.LeanInstance(store, instance, info)
        assert lean.invoke(encoded) == memory.read(*_last_result(store, alloc, handle, memory, encoded))
        return raw, sample_us(lambda: lean.invoke(encoded), budget_s=_budget(quick, 0.8), min_n=50, max_n=50000, warmup=50)
    finally:
        set_current_context(None)


def _last_result(store, alloc, handle, memory, encoded: bytes) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    ptr = fastpath.call(store, alloc, (len(encoded),), fastpath.I32)
    memory.write(ptr, encoded)
    packed = fastpath.call(store, handle, (ptr, len(encoded)), fastpath.I64)
    return packed >> 32, packed & 0xFFFFFFFF


def breakdown(rt: Runtime, guest: guests.Guest, quick: bool) -> dict:
    """Where a fresh-instance invocation of `guest` spends its time: Sandbox.run's steps, timed one by one.

    This replays Sandbox.run's sequence (same calls, same order) with a clock between steps; the total is
    within noise of the real Sandbox.run measured above.
    """
    digest = rt.store.add(guest.wasm)
    loaded, _ = rt.store.load(digest, guest.name)
    info = loaded.info
    encoded = abi.encode_event(typical_event(guest.name))
    env = guest.env
    steps: dict[str, list[float]] = {}
    clock = time.perf_counter_ns

    def once() -> None:
        t = [clock()]
        store = fastcall.CoreStore(
            fastcall.pointer_of(rt.engine), fuel=LIMITS.fuel, epoch_ticks=rt.ticker.ticks_for(LIMITS.timeout_ms),
            linear_bytes=LIMITS.memory_mb << 20, table_elements=16_384, tables=4, memories=16, instances=1,
        )
        t.append(clock())
        ctx = InvocationContext(guest.name, "r", {k: v.encode() for k, v in env.items()}, _drop, (), time.monotonic() + 1)
        set_current_context(ctx)
        t.append(clock())
        store.instantiate(loaded.pre_ptr, info.memory_export, info.alloc_export, info.handle_export, info.init_export)
        t.append(clock())
        result = store.invoke(encoded, LIMITS.max_result_bytes)
        t.append(clock())
        set_current_context(None)
        ctx.flush()
        store.get_fuel()
        store.memory()
        t.append(clock())
        del store  # wasmtime_store_delete: frees the instance and its memory
        t.append(clock())
        assert isinstance(result, bytes)
        names = ["CoreStore (store, fuel, limits, deadline)", "InvocationContext + set_current_context",
                 "instantiate + find the exports (in C)", "invoke: edgefn_alloc, event in, edgefn_handle (guest + host calls), result out",
                 "fuel + memory + flush", "Store drop (wasmtime_store_delete)"]
        for name, a, b in zip(names, t, t[1:], strict=False):
            steps.setdefault(name, []).append((b - a) / 1000)
        steps.setdefault("total", []).append((t[-1] - t[0]) / 1000)

    sample_us(once, budget_s=_budget(quick, 1.2), min_n=200, max_n=20000, warmup=50)
    return {name: summarize(v) for name, v in steps.items()}


def host_call_cost(rt: Runtime, quick: bool) -> dict:
    """One guest→host import call (env_get, the Python callback hello makes once per request)."""
    from abi_crossing import (
        GUEST,  # the WAT guest of bench/abi_crossing.py: pull(n) calls env_get n times
    )

    digest = rt.store.add(wasmtime.wat2wasm(GUEST))
    loaded, _ = rt.store.load(digest, "abi-crossing")
    store = wasmtime.Store(rt.engine)
    store.set_fuel(10**15)
    store.set_epoch_deadline(10**9)
    instance = fastpath.instantiate(store, loaded.pre)
    pull = fastpath.export(store, instance, list(loaded.info.export_names).index("pull"))
    set_current_context(InvocationContext("bench", "r", {"HOST": b"value"}, _drop))
    try:
        zero = summarize(sample_us(lambda: fastpath.call(store, pull, (0,), fastpath.I32), budget_s=_budget(quick, 0.4), min_n=50, max_n=20000))
        hundred = summarize(sample_us(lambda: fastpath.call(store, pull, (100,), fastpath.I32), budget_s=_budget(quick, 0.6), min_n=20, max_n=2000))
    finally:
        set_current_context(None)
    # pull(n) runs its loop body at least once: pull(0) makes one call, pull(100) makes 100
    return {"env_get_call_us_p50": (hundred["p50"] - zero["p50"]) / 99}
