"""One invocation of one guest: a Store with limits (fresh, or a warm pooled one), the calls, a report.

Runs on a worker thread. Core modules and components go through the same steps and the same typed errors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import wasmtime

from ..core.app import Limits
from ..core.exceptions import (
    CpuBudgetExhausted,
    EphemeralStorageLimitExceeded,
    FunctionInitError,
    GuestTrap,
    InvalidResult,
    InvocationError,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from ..core.report import InvocationReport
from ..core.tracing import TraceContext, Tracer
from . import abi, component, fastcall
from .context import InvocationContext, KvGrant, SecretMask, set_current_context
from .engine import EpochTicker
from .instance import GuestInstance, LogSlot
from .linking import GuestModuleInfo
from .module_store import LoadedModule
from .pool import WarmPool
from .scratch import ScratchDirectory, ScratchRoot

PAGE = 65536
#: what an instance may hold besides linear memory (all of it inside memory_mb, see store_limits)
MAX_TABLES = 4
MAX_CORE_MEMORIES = 16
MAX_COMPONENT_INSTANCES = 32
TABLE_ELEMENT_BYTES = 8
#: the fuel a runtime component may spend importing its function's sources at instance start (`edgefn dev`):
#: a production build does that import at build time, so it is never charged to the function's `fuel`
SOURCES_LOAD_FUEL = 20_000_000_000
#: what _native.invoke answers for a result the sandbox refuses (runtime/_native.c)
_NO_ROOM, _EMPTY, _OVERSIZED = 2, 3, 4
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


@dataclass
class SandboxRun:
    """The raw outcome of one run: result bytes, or the typed error; the report either way."""

    result: bytes | None
    error: InvocationError | None
    report: InvocationReport
    #: a pooled instance after a clean run, for the caller to give back (None otherwise)
    instance: GuestInstance | None = None
    #: (bytes asked for in all, the budget) of the first memory growth the budget refused (core modules)
    memory_refused: tuple[int, int] | None = None


LogEmitter = Callable[[int, str], None]


@dataclass(frozen=True)
class StoreLimits:
    """How `memory_mb` is split over what an instance can allocate, so that all of it together stays
    within the cap: tables get a fixed share (MAX_TABLES of `table_elements` each), linear memory the
    rest (`linear_bytes`: every memory of a core module together, through its Store's budget, runtime/_native.c; the one
    memory of a component, through wasmtime's store limiter)."""

    table_elements: int
    linear_bytes: int

    @classmethod
    def of(cls, limits: Limits) -> "StoreLimits":
        split = _SPLITS.get(limits)
        if split is None:
            cap = limits.memory_mb * 1024 * 1024
            elements = max(16_384, limits.memory_mb * 256)  # CPython's tables need ~10,000
            split = cls(elements, max(0, cap - MAX_TABLES * elements * TABLE_ELEMENT_BYTES))
            if len(_SPLITS) < 1024:  # an app has a few distinct limits: each split is made once
                _SPLITS[limits] = split
        return split


_SPLITS: dict[Limits, StoreLimits] = {}


def _trap_frames(trap: wasmtime.Trap) -> list[str]:
    frames = []
    for frame in trap.frames[:16]:
        name = frame.func_name or f"func[{frame.func_index}]"
        frames.append(f"{name} @ 0x{frame.module_offset:x}")
    return frames


class Sandbox:
    """Runs guests. By default every call gets a new Store and instance that are dropped afterwards; a
    function that opts in to instance reuse passes a warm pool, from which instances are taken and to
    which the invoker returns them after a clean invocation."""

    def __init__(
        self, engine: wasmtime.Engine, ticker: EpochTicker, component_engine: wasmtime.Engine | None = None, scratch_root: ScratchRoot | None = None,
    ) -> None:
        self._engine_ptr = fastcall.pointer_of(engine)
        self._component_engine = component_engine or engine
        self._ticker = ticker
        #: where instances' /tmp directories are made (runtime/host/scratch.py)
        self.scratch_root = scratch_root or ScratchRoot()
        #: id(env) -> (env, its values as bytes for env_get, its packed form for the Store): made once per env
        self._env_forms: dict[int, tuple[dict[str, str], dict[str, bytes], bytes]] = {}

    def _env_forms_of(self, env: dict[str, str]) -> tuple[dict[str, bytes], bytes]:
        """`env` as the host's env_get reads it and as a core Store holds it. A function's env is one dict for
        the life of its FunctionSpec (never changed in place), so it is encoded once, not per invocation."""
        forms = self._env_forms.get(id(env))
        if forms is None or forms[0] is not env:
            if len(self._env_forms) >= 4096:  # specs come and go with deploys: never more than a bounded few
                self._env_forms.clear()
            forms = self._env_forms[id(env)] = (env, {k: v.encode() for k, v in env.items()}, fastcall.pack_env(env))
        return forms[1], forms[2]

    # --- instances -------------------------------------------------------------------------------

    def new_instance(self, loaded: LoadedModule, limits: Limits, env: dict[str, str], function: str, request_id: str) -> GuestInstance:
        """A Store with the function's limits and an instance in it (core: `_initialize` not yet run).

        Raises a typed InvocationError (the Store's fuel and deadline are set for one invocation)."""
        start = time.perf_counter()
        split, per_memory = self._store_limits(loaded, limits, function, request_id)
        ticks = self._ticker.ticks_for(limits.timeout_ms)
        info = loaded.info
        slot = LogSlot()
        if isinstance(info, component.ComponentInfo):
            store = wasmtime.Store(self._component_engine)
            store.set_fuel(limits.fuel)
            store.set_limits(
                memory_size=per_memory, table_elements=split.table_elements, instances=MAX_COMPONENT_INSTANCES, tables=MAX_TABLES,
                memories=max(1, info.memory.count),
            )
            store.set_epoch_deadline(ticks)
            scratch = self.scratch_root.mount(limits.ephemeral_storage_mb * 1024 * 1024) if info.uses_filesystem else None
            store.set_wasi(_wasi_config(env, slot, loaded, scratch))
            instance = GuestInstance(loaded, store, slot, scratch)
            assert loaded.linker is not None and loaded.component is not None
            try:
                comp_inst = component.instantiate(loaded.linker, store, loaded.component)
                instance.func = component.handle_func(store, comp_inst, info.handle_export)
                if loaded.sources is not None:
                    self._load_sources(instance, store, function, request_id, limits)
            except component.ComponentCallError as exc:
                raise self._classify(exc, function, request_id, limits, instantiating=True) from None
        else:
            assert isinstance(info, GuestModuleInfo) and loaded.pre is not None
            # linear memory: the Store's budget decides (all memories together), the limiter the rest; a WASI
            # module's Store holds a second instance, the relay of its /tmp (runtime/host/scratch.py)
            core = fastcall.CoreStore(
                self._engine_ptr, fuel=limits.fuel, epoch_ticks=ticks, linear_bytes=split.linear_bytes,
                table_elements=split.table_elements, tables=MAX_TABLES, memories=MAX_CORE_MEMORIES, instances=2 if info.imports_wasi else 1,
                env=self._env_forms_of(env)[1],
            )
            scratch = self.scratch_root.make(limits.ephemeral_storage_mb * 1024 * 1024) if info.imports_wasi else None
            instance = GuestInstance(loaded, core, slot, scratch)
            try:
                if scratch is not None:
                    core.set_wasi(_wasi_config(env, slot, scratch=scratch))
                core.instantiate(loaded.pre_ptr, info.memory_export, info.alloc_export, info.handle_export, info.init_export)
            except fastcall.GuestCallError as exc:
                raise self._classify(exc, function, request_id, limits, instantiating=True) from None
            instance.needs_init = info.init_export is not None
        instance.create_ms = (time.perf_counter() - start) * 1000
        return instance

    @staticmethod
    def _store_limits(loaded: LoadedModule, limits: Limits, function: str, request_id: str) -> tuple[StoreLimits, int]:
        """The Store's limits and the bytes each memory may have; MemoryLimitExceeded if the module's own start
        does not fit."""
        split = StoreLimits.of(limits)
        info = loaded.info
        # a component's memories are capped one by one (wasmtime's store limiter): share the cap out over them
        per_memory = info.memory.per_memory_bytes(split.linear_bytes) if isinstance(info, component.ComponentInfo) else split.linear_bytes
        min_bytes = info.memory_min_bytes
        if min_bytes > per_memory:
            what = "component" if loaded.kind == "component" else "module"
            raise MemoryLimitExceeded(
                function, request_id, limits.memory_mb, f": the {what} needs {min_bytes // PAGE} pages at start, {per_memory // PAGE} fit"
            )
        return split, per_memory

    def _run_fresh_core(
        self, loaded: LoadedModule, info: GuestModuleInfo, event: bytes, limits: Limits, env: dict[str, str], function: str, request_id: str,
    ) -> fastcall.FreshRun:
        """A fresh core instance's whole invocation in one call into C (fastcall.run_fresh): no CoreStore or
        GuestInstance is made for an instance nobody keeps. MemoryLimitExceeded if the module's start does not fit."""
        split, _ = self._store_limits(loaded, limits, function, request_id)
        assert loaded.pre is not None
        return fastcall.run_fresh(
            self._engine_ptr, loaded.pre_ptr, (info.memory_export, info.alloc_export, info.handle_export), fuel=limits.fuel,
            epoch_ticks=self._ticker.ticks_for(limits.timeout_ms), linear_bytes=split.linear_bytes, table_elements=split.table_elements,
            tables=MAX_TABLES, memories=MAX_CORE_MEMORIES, env=self._env_forms_of(env)[1], event=event, max_result_bytes=limits.max_result_bytes,
        )

    def _fresh_result(self, fresh: fastcall.FreshRun, event: bytes, function: str, request_id: str, limits: Limits) -> bytes:
        if fresh.failure is not None:
            raise self._classify(fresh.failure, function, request_id, limits, instantiating=fresh.instantiating)
        assert fresh.value is not None
        if isinstance(fresh.value, bytes):
            return fresh.value
        raise self._refused_result(fresh.value, event, function, request_id, limits, fresh.refused)

    def _load_sources(self, instance: GuestInstance, store: wasmtime.Store, function: str, request_id: str, limits: Limits) -> None:
        """Have a runtime component import its function from the mounted sources: what a production build did
        at build time, so its fuel is not the function's; the time counts, as a build's did not (dev only)."""
        assert instance.func is not None and instance.loaded.sources is not None
        store.set_fuel(SOURCES_LOAD_FUEL)
        answer = abi.decode_document(component.call_handle(store, instance.func, b"\0" + instance.loaded.sources.module.encode())[0])
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(self._ticker.ticks_for(limits.timeout_ms))
        if answer != {}:
            doc = answer if isinstance(answer, dict) else {}
            file = str(doc.get("file") or "")
            mount = SOURCES_MOUNT + "/"
            if file.startswith(mount):  # the guest's path of the file -> the host's
                file = str(instance.loaded.sources.directory / file[len(mount) :])
            raise FunctionInitError(
                function, request_id, str(doc.get("errorType") or "Runtime.ImportModuleError"), str(doc.get("errorMessage") or answer),
                file, int(doc.get("line") or 0), int(doc.get("column") or 0), doc.get("missingModule") if isinstance(doc.get("missingModule"), str) else None,
            )

    def initialize(self, instance: GuestInstance, function: str, request_id: str, limits: Limits) -> None:
        """Run a core module's `_initialize` once per instance (components need none: componentize-py
        snapshots the initialised interpreter at build time)."""
        if instance.needs_init and isinstance(instance.store, fastcall.CoreStore):
            instance.needs_init = False
            try:
                instance.store.call_init()
            except fastcall.GuestCallError as exc:
                raise self._classify(exc, function, request_id, limits) from None

    def prewarm(
        self, loaded: LoadedModule, *, function: str, limits: Limits, env: dict[str, str], emit: LogEmitter, mask: SecretMask | None = None,
    ) -> GuestInstance:
        """A ready instance for a warm pool (provisioned concurrency): created and initialised now, under the
        function's limits. Raises the typed InvocationError if that fails."""
        ctx = InvocationContext(function, "prewarm", self._env_forms_of(env)[0], emit, mask=mask)
        set_current_context(ctx)
        self._ticker.enter()
        try:
            instance = self.new_instance(loaded, limits, env, function, "prewarm")
            instance.slot.ctx = ctx
            ctx.scratch = instance.scratch
            start = time.perf_counter()
            self.initialize(instance, function, "prewarm", limits)
            instance.create_ms += (time.perf_counter() - start) * 1000
        finally:
            self._ticker.leave()
            set_current_context(None)
            ctx.flush()
        instance.slot.ctx = None
        return instance

    # --- one invocation ----------------------------------------------------------------------------

    def run(
        self,
        loaded: LoadedModule,
        *,
        function: str,
        request_id: str,
        event: bytes,
        limits: Limits,
        env: dict[str, str],
        emit: LogEmitter,
        init_duration_ms: float | None = None,
        allowed_hosts: tuple[str, ...] = (),
        pool: WarmPool | None = None,
        io_gate: "tuple[Callable[[], None], Callable[[], None]] | None" = None,
        kv: KvGrant | None = None,
        mask: SecretMask | None = None,
        trace: "tuple[TraceContext, Tracer] | None" = None,
    ) -> SandboxRun:
        """One invocation. Without `pool`: a fresh instance, dropped afterwards. With `pool`: a warm instance
        if one is idle (else a new one); after a clean run it is in `SandboxRun.instance`, for the caller to
        give back once the result is known to be good. An instance that failed is never returned."""
        start = time.perf_counter()
        deadline = time.monotonic() + limits.timeout_ms / 1000
        ctx = InvocationContext(function, request_id, self._env_forms_of(env)[0], emit, allowed_hosts, deadline, io_gate, kv, mask)
        ctx.trace = trace
        instance = pool.take() if pool is not None else None
        warm = instance is not None
        info = loaded.info
        # a fresh core instance nobody keeps (no _initialize, no WASI /tmp): the whole invocation in one C call
        fresh: fastcall.FreshRun | None = None
        one_call = info if pool is None and isinstance(info, GuestModuleInfo) and info.init_export is None and not info.imports_wasi else None
        result: bytes | None = None
        error: InvocationError | None = None
        set_current_context(ctx)
        self._ticker.enter()
        try:
            if one_call is not None:
                fresh = self._run_fresh_core(loaded, one_call, event, limits, env, function, request_id)
                result = self._fresh_result(fresh, event, function, request_id, limits)
            else:
                rearm = instance is not None  # a new instance's Store is armed as it is made
                if instance is None:
                    instance = self.new_instance(loaded, limits, env, function, request_id)
                elif isinstance(instance.store, fastcall.CoreStore):
                    instance.store.rearm(limits.fuel, self._ticker.ticks_for(limits.timeout_ms))
                if pool is not None and not warm:
                    start = time.perf_counter()  # a cold pooled instance: its creation is Init Duration, not Duration
                instance.slot.ctx = ctx
                if instance.scratch is not None:
                    instance.scratch.refused = None
                    ctx.scratch = instance.scratch
                self.initialize(instance, function, request_id, limits)
                if loaded.kind == "component":
                    result = self._call_component(instance, event, function, request_id, limits, rearm)
                else:
                    result = self._call_core(instance, event, function, request_id, limits)
        except InvocationError as exc:
            error = exc
        finally:
            self._ticker.leave()
            set_current_context(None)
            if instance is not None:
                instance.slot.ctx = None
            ctx.flush()
        if fresh is not None:
            peak, refused, fuel_used = fresh.peak, fresh.refused, limits.fuel - fresh.fuel_left
        elif instance is not None:
            instance.invocations += 1
            peak, refused = instance.memory_use()
            left = instance.fuel_left if instance.fuel_left is not None else instance.store.get_fuel()
            instance.fuel_left = None
            fuel_used = limits.fuel - left
        else:
            peak, refused, fuel_used = info.memory_min_bytes, None, 0
        if error is not None and refused is not None and not isinstance(error, (CpuBudgetExhausted, WallClockTimeout, MemoryLimitExceeded)):
            # a growth past the budget was refused, and the guest then failed: that refusal is the cause
            asked, budget = refused
            error = MemoryLimitExceeded(function, request_id, limits.memory_mb, f": {asked} bytes asked for, {budget} allowed (then: {error.detail})")
        scratch = instance.scratch if instance is not None else None
        if scratch is not None:
            scratch.note_if_full()
        tmp_refused = scratch.refused if scratch is not None else None
        if error is not None and tmp_refused is not None and not isinstance(error, (CpuBudgetExhausted, WallClockTimeout, MemoryLimitExceeded)):
            # a write past /tmp's cap was refused (ENOSPC), and the guest then failed: that refusal is the cause
            error = EphemeralStorageLimitExceeded(function, request_id, limits.ephemeral_storage_mb, f" (then: {error})")
        if scratch is not None and pool is None:
            scratch.remove()  # a fresh instance's /tmp goes with its one invocation
        if pool is not None:
            # Lambda's rule: Init Duration only on a cold instance (its load and creation), none on a warm one
            init_duration_ms = None if warm else (init_duration_ms or 0.0) + (instance.create_ms if instance is not None else 0.0)
        report = InvocationReport(
            request_id=request_id,
            function=function,
            duration_ms=(time.perf_counter() - start) * 1000,
            init_duration_ms=init_duration_ms,
            fuel_used=fuel_used,
            peak_memory_bytes=peak,
            memory_mb=limits.memory_mb,
            outcome="ok" if error is None else error.kind,
            warm=warm,
            fuel_exact=not isinstance(error, WallClockTimeout),
            kv_ops=kv.ops if kv is not None else None,
            kv_bytes=kv.bytes if kv is not None else 0,
            tmp_refused_bytes=tmp_refused,
            ephemeral_storage_mb=limits.ephemeral_storage_mb,
        )
        keep = instance if (pool is not None and error is None) else None
        return SandboxRun(result, error, report, keep, refused)

    def _call_core(self, instance: GuestInstance, event: bytes, function: str, request_id: str, limits: Limits) -> bytes:
        store = instance.store
        assert isinstance(store, fastcall.CoreStore)
        try:
            out = store.invoke(event, limits.max_result_bytes)
        except fastcall.GuestCallError as exc:
            raise self._classify(exc, function, request_id, limits) from None
        if isinstance(out, bytes):
            return out
        raise self._refused_result(out, event, function, request_id, limits, instance.memory_refused())

    @staticmethod
    def _refused_result(
        out: tuple[int, int, int, int], event: bytes, function: str, request_id: str, limits: Limits, refused: tuple[int, int] | None,
    ) -> InvocationError:
        """The error of a result _native refused (its (kind, a, b, c)); `refused` the Store's refused growth."""
        kind, a, b, c = out
        if kind == _NO_ROOM:
            if refused is not None:
                return MemoryLimitExceeded(function, request_id, limits.memory_mb, f": no room for the {len(event)}-byte event")
            return InvalidResult(function, request_id, f"edgefn_alloc({len(event)}) returned an unusable address {a:#x}")
        if kind == _EMPTY:
            return InvalidResult(function, request_id, "an empty result (length 0)")
        if kind == _OVERSIZED:
            return InvalidResult(function, request_id, f"oversized: {a} bytes, over max_result_bytes {limits.max_result_bytes}")
        return InvalidResult(function, request_id, f"out of bounds: result at {a:#x}+{b} outside {c} bytes of memory")

    def _call_component(self, instance: GuestInstance, event: bytes, function: str, request_id: str, limits: Limits, rearm: bool) -> bytes:
        """`handle(event)`; `rearm`: a reused instance, whose Store gets the invocation's fuel and deadline in the same call."""
        assert instance.func is not None
        assert isinstance(instance.store, wasmtime.Store)
        fuel = limits.fuel if rearm else None
        try:
            result, instance.fuel_left = component.call_handle(instance.store, instance.func, event, fuel, self._ticker.ticks_for(limits.timeout_ms))
        except component.ComponentCallError as exc:
            instance.fuel_left = exc.fuel_left
            raise self._classify(exc, function, request_id, limits) from None
        if not result:
            raise InvalidResult(function, request_id, "an empty result (length 0)")
        if len(result) > limits.max_result_bytes:
            raise InvalidResult(function, request_id, f"oversized: {len(result)} bytes, over max_result_bytes {limits.max_result_bytes}")
        return result

    def _classify(
        self,
        exc: fastcall.GuestCallError | component.ComponentCallError,
        function: str,
        request_id: str,
        limits: Limits,
        instantiating: bool = False,
    ) -> InvocationError:
        if isinstance(exc, component.ComponentCallError):
            code = exc.trap_code
            frames = exc.frames
            trap = code is not None or exc.exit_status is not None
            message = exc.message.splitlines()[-1].strip() if exc.message else "error"
        else:
            code = exc.trap.trap_code if exc.trap is not None else None
            frames = _trap_frames(exc.trap) if exc.trap is not None else []
            trap = exc.trap is not None
            message = str(exc.error)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return CpuBudgetExhausted(function, request_id, limits.fuel)
        if code == wasmtime.TrapCode.INTERRUPT:
            return WallClockTimeout(function, request_id, limits.timeout_ms)
        if instantiating and not trap:
            # instantiation failed without a trap: what a validated, linked module can hit is a store limit
            # (the memory budget, or the tables, memories and instances memory_mb allows)
            return MemoryLimitExceeded(function, request_id, limits.memory_mb, f": instantiation refused ({message})")
        if isinstance(exc, component.ComponentCallError):
            if exc.exit_status is not None:
                return GuestTrap(function, request_id, "exit", frames)
            if code is None:
                # not a trap: wasmtime refused the call itself, e.g. a result too large to copy to the host
                return InvalidResult(function, request_id, f"the call failed without a trap: {message}")
            return GuestTrap(function, request_id, code.name.lower(), frames)
        if not trap:
            return GuestTrap(function, request_id, "error", [message])
        if code is None:
            # a trap without a code is raised by the host: WASI proc_exit is the one a guest can cause
            return GuestTrap(function, request_id, "exit", frames)
        return GuestTrap(function, request_id, code.name.lower(), frames)


#: where an instance's scratch directory is mounted (Lambda's /tmp)
SCRATCH_MOUNT = "/tmp"
#: where a source bundle's tree is mounted in its instances (guest-sdk/python/edgefn_guest/_runtime.py)
SOURCES_MOUNT = "/app"


def _wasi_config(env: dict[str, str], slot: LogSlot, loaded: LoadedModule | None = None, scratch: ScratchDirectory | None = None) -> wasmtime.WasiConfig:
    """Least privilege: no preopened directories but the instance's own /tmp (size-capped) and a
    source bundle's own tree (read-only), no network, empty argv and stdin; the manifest env only; stdout and
    stderr to the function's log (WASI preview 1 for core modules, 0.2 for components)."""
    wasi = wasmtime.WasiConfig()
    if scratch is not None:
        wasi.preopen_dir(str(scratch.path), SCRATCH_MOUNT, True)
    if loaded is not None and loaded.sources is not None:
        wasi.preopen_dir(str(loaded.sources.directory), SOURCES_MOUNT, False)
    wasi.env = [(k, v) for k, v in env.items()]
    wasi.stdout_custom = slot.stdout
    wasi.stderr_custom = slot.stderr
    return wasi


def log_level(level: int) -> int:
    return LOG_LEVELS.get(level, logging.INFO)
