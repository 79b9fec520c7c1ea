"""The one wasmtime Engine of a process, its fingerprint, and the epoch ticker that enforces wall time."""

from __future__ import annotations

import ctypes
import hashlib
import platform
import threading
from dataclasses import asdict, dataclass
from functools import partial

import wasmtime

from . import _native, memory

#: bump when the on-disk artifact layout or the code-affecting settings below change meaning
#: (2: core modules are compiled for an engine without copy-on-write memory images, runtime/memory.py)
ARTIFACT_FORMAT = 2


@dataclass(frozen=True)
class EngineSettings:
    """Every Config flag edgefn sets. All of them change generated code, so all are in the fingerprint."""

    consume_fuel: bool = True
    epoch_interruption: bool = True
    cranelift_opt_level: str = "speed"
    max_wasm_stack: int = 512 * 1024
    #: the ticker's period; a timeout is rounded up to whole ticks
    epoch_tick_ms: int = 5
    #: core modules' linear memory from edgefn's budgeted allocator (runtime/memory.py): memory_mb caps all
    #: of an instance's memories together. Components keep wasmtime's own (copy-on-write images: a fresh
    #: CPython instance in 1.5 ms rather than 12 ms) under the store limiter, one memory each.
    budgeted_memory: bool = True

    def fingerprint(self) -> str:
        """A digest naming the code this engine generates: artifacts from another fingerprint are foreign."""
        code_flags = {k: v for k, v in asdict(self).items() if k not in ("epoch_tick_ms", "budgeted_memory")}
        ident = repr(
            (
                ARTIFACT_FORMAT,
                _wasmtime_version(),
                platform.machine(),
                platform.system(),
                sorted(code_flags.items()),
            )
        )
        return hashlib.sha256(ident.encode()).hexdigest()


def _wasmtime_version() -> str:
    from importlib.metadata import version

    return version("wasmtime")


def create_engine(settings: EngineSettings, kind: str = "core") -> wasmtime.Engine:
    """The engine for core modules (`kind="core"`, budgeted memory) or for components."""
    config = wasmtime.Config()
    config.consume_fuel = settings.consume_fuel
    config.epoch_interruption = settings.epoch_interruption
    config.cranelift_opt_level = settings.cranelift_opt_level
    config.max_wasm_stack = settings.max_wasm_stack
    if settings.budgeted_memory and kind == "core":
        config.memory_init_cow = False  # copy-on-write images need wasmtime's own mmap memories
        memory.install(config)
    return wasmtime.Engine(config)


#: how long the ticker keeps ticking after the last guest ran, before it parks (no wake-ups on an idle node)
IDLE_AFTER_S = 1.0


class EpochTicker:
    """A thread that advances the engines' epoch every tick while guests run; stores set deadlines in ticks.
    It is native (runtime/_native.c) and never takes the GIL: a Python thread waking 200 times a second
    would make the busy event loop hand the GIL over at each tick. A node with no guest running for
    IDLE_AFTER_S parks it, so an idle server does not wake at all (on a shared core those wake-ups preempt
    the busy servers beside it); the first guest to run again (`enter`) wakes it."""

    def __init__(self, engines: wasmtime.Engine | list[wasmtime.Engine], tick_ms: int) -> None:
        self._engines = engines if isinstance(engines, list) else [engines]
        self.tick_ms = tick_ms
        self._handle: object | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        increment = ctypes.cast(wasmtime._bindings._wasmtime_engine_increment_epoch, ctypes.c_void_p).value or 0
        engines = tuple(ctypes.cast(e.ptr(), ctypes.c_void_p).value or 0 for e in self._engines)
        with self._lock:
            self._handle = _native.ticker_start(increment, engines, self.tick_ms, round(IDLE_AFTER_S * 1000), tuple(self._engines))
        self.enter, self.leave = partial(_native.ticker_enter, self._handle), partial(_native.ticker_leave, self._handle)  # type: ignore[method-assign]

    def stop(self) -> None:
        with self._lock:
            if self._handle is not None:
                _native.ticker_stop(self._handle)

    def ticks_for(self, timeout_ms: int) -> int:
        # +1: the first tick may come at once, so a deadline of n ticks guarantees at least (n-1) full ticks
        return -(-timeout_ms // self.tick_ms) + 1

    @property
    def parked(self) -> bool:
        """No guest ran for IDLE_AFTER_S: the thread waits for the next one."""
        return self._handle is not None and _native.ticker_parked(self._handle)

    def enter(self) -> None:
        """A guest is about to run: the epoch must advance until it leaves (replaced by the native call at start)."""

    def leave(self) -> None:
        """A guest stopped running (replaced by the native call at start)."""
