"""One invocation of one guest: a fresh Store with limits, two calls, a report. Runs on a worker thread."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import wasmtime

from . import fastcall
from .engine import EpochTicker
from .errors import (
    CpuBudgetExhausted,
    GuestTrap,
    InvalidResult,
    InvocationError,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from .linking import InvocationContext, set_current_context
from .module_store import LoadedModule

PAGE = 65536
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


@dataclass(frozen=True)
class Limits:
    """Per-function limits. Defaults mirror Lambda@Edge viewer triggers (128 MB, 5 s)."""

    memory_mb: int = 128
    timeout_ms: int = 5000
    fuel: int = 2_000_000_000
    max_result_bytes: int = 1024 * 1024


@dataclass
class InvocationReport:
    """What one invocation cost; rendered as Lambda's REPORT line."""

    request_id: str
    function: str
    duration_ms: float
    init_duration_ms: float | None
    fuel_used: int
    peak_memory_bytes: int
    memory_mb: int
    outcome: str
    version: str = "$LATEST"

    @property
    def billed_duration_ms(self) -> int:
        return max(1, -(-int((self.duration_ms + (self.init_duration_ms or 0)) * 1000) // 1000))

    def line(self) -> str:
        parts = [
            f"REPORT RequestId: {self.request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {self.billed_duration_ms} ms",
            f"Memory Size: {self.memory_mb} MB",
            f"Max Memory Used: {-(-self.peak_memory_bytes // (1024 * 1024))} MB",
        ]
        if self.init_duration_ms is not None:
            parts.append(f"Init Duration: {self.init_duration_ms:.2f} ms")
        parts.append(f"Fuel Used: {self.fuel_used}")
        parts.append(f"Outcome: {self.outcome}")
        return "\t".join(parts)


@dataclass
class SandboxRun:
    """The raw outcome of one run: result bytes, or the typed error; the report either way."""

    result: bytes | None
    error: InvocationError | None
    report: InvocationReport


LogEmitter = Callable[[int, str], None]


def near_cap(size: int, cap: int) -> bool:
    """The store state that means "a grow was refused": memory within max(1 page, cap/8) of the cap.

    wasmtime-py exposes no grow-failure hook (memory.grow just returns -1), so a failed invocation
    that ends this close to its cap is classified as a memory-limit hit.
    """
    return size + max(PAGE, cap // 8) > cap


def _trap_frames(trap: wasmtime.Trap) -> list[str]:
    frames = []
    for frame in trap.frames[:16]:
        name = frame.func_name or f"func[{frame.func_index}]"
        frames.append(f"{name} @ 0x{frame.module_offset:x}")
    return frames


class Sandbox:
    """Runs guests: every call gets a new Store and instance that are dropped afterwards."""

    def __init__(self, engine: wasmtime.Engine, ticker: EpochTicker) -> None:
        self._engine = engine
        self._ticker = ticker

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
    ) -> SandboxRun:
        start = time.perf_counter()
        cap = limits.memory_mb * 1024 * 1024
        store = wasmtime.Store(self._engine)
        store.set_fuel(limits.fuel)
        store.set_limits(memory_size=cap)
        store.set_epoch_deadline(self._ticker.ticks_for(limits.timeout_ms))
        deadline = time.monotonic() + limits.timeout_ms / 1000
        ctx = InvocationContext(function, request_id, {k: v.encode() for k, v in env.items()}, emit, allowed_hosts, deadline)
        info = loaded.info
        if info.imports_wasi:
            store.set_wasi(_wasi_config(env, ctx))
        memory: fastcall.GuestMemory | None = None
        result: bytes | None = None
        error: InvocationError | None = None
        set_current_context(ctx)
        try:
            if info.memory_min_bytes > cap:
                raise MemoryLimitExceeded(
                    function, request_id, limits.memory_mb, f": the module needs {info.memory_min_bytes // PAGE} pages at start"
                )
            instance = fastcall.instantiate(store, loaded.pre)
            memory = fastcall.GuestMemory(store, fastcall.export_nth(store, instance, info.memory_export))
            if info.init_export is not None:
                fastcall.call(store, fastcall.export_nth(store, instance, info.init_export), (), None)
            alloc = fastcall.export_nth(store, instance, info.alloc_export)
            ptr = fastcall.call(store, alloc, (len(event),), fastcall.I32)
            if ptr == 0 or not memory.write(ptr, event):
                if near_cap(memory.size(), cap):
                    raise MemoryLimitExceeded(function, request_id, limits.memory_mb, f": no room for the {len(event)}-byte event")
                raise InvalidResult(function, request_id, f"edgefn_alloc({len(event)}) returned an unusable address {ptr:#x}")
            handle = fastcall.export_nth(store, instance, info.handle_export)
            packed = fastcall.call(store, handle, (ptr, len(event)), fastcall.I64)
            rptr, rlen = packed >> 32, packed & 0xFFFFFFFF
            if rlen == 0:
                raise InvalidResult(function, request_id, "an empty result (length 0)")
            if rlen > limits.max_result_bytes:
                raise InvalidResult(
                    function, request_id, f"oversized: {rlen} bytes, over max_result_bytes {limits.max_result_bytes}"
                )
            result = memory.read(rptr, rlen)
            if result is None:
                raise InvalidResult(
                    function, request_id, f"out of bounds: result at {rptr:#x}+{rlen} outside {memory.size()} bytes of memory"
                )
        except fastcall.GuestCallError as exc:
            error = self._classify(exc, function, request_id, limits, memory, cap)
        except InvocationError as exc:
            error = exc
        finally:
            set_current_context(None)
            ctx.flush()
        peak = memory.size() if memory is not None else info.memory_min_bytes
        if error is not None and not isinstance(error, (CpuBudgetExhausted, WallClockTimeout, MemoryLimitExceeded)):
            if memory is not None and near_cap(peak, cap):
                error = MemoryLimitExceeded(function, request_id, limits.memory_mb, f" (then: {error.detail})")
        fuel_used = limits.fuel - store.get_fuel()
        report = InvocationReport(
            request_id=request_id,
            function=function,
            duration_ms=(time.perf_counter() - start) * 1000,
            init_duration_ms=init_duration_ms,
            fuel_used=fuel_used,
            peak_memory_bytes=peak,
            memory_mb=limits.memory_mb,
            outcome="ok" if error is None else error.kind,
        )
        return SandboxRun(result, error, report)

    def _classify(
        self,
        exc: fastcall.GuestCallError,
        function: str,
        request_id: str,
        limits: Limits,
        memory: fastcall.GuestMemory | None,
        cap: int,
    ) -> InvocationError:
        trap = exc.trap
        code = trap.trap_code if trap is not None else None
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return CpuBudgetExhausted(function, request_id, limits.fuel)
        if code == wasmtime.TrapCode.INTERRUPT:
            return WallClockTimeout(function, request_id, limits.timeout_ms)
        if memory is None and exc.error is not None:
            # instantiation failed without a trap: the only cause a validated module can hit is the memory cap
            return MemoryLimitExceeded(function, request_id, limits.memory_mb, f": instantiation refused ({exc.error})")
        if trap is None:
            return GuestTrap(function, request_id, "error", [str(exc.error)])
        if code is None:
            # a trap without a code is raised by the host: WASI proc_exit is the one a guest can cause
            return GuestTrap(function, request_id, "exit", _trap_frames(trap))
        return GuestTrap(function, request_id, code.name.lower(), _trap_frames(trap))


def _wasi_config(env: dict[str, str], ctx: InvocationContext) -> wasmtime.WasiConfig:
    wasi = wasmtime.WasiConfig()
    wasi.env = [(k, v) for k, v in env.items()]
    wasi.stdout_custom = ctx.stdout
    wasi.stderr_custom = ctx.stderr
    return wasi


def log_level(level: int) -> int:
    return LOG_LEVELS.get(level, logging.INFO)
