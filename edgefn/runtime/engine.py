"""The one wasmtime Engine of a process, its fingerprint, and the epoch ticker that enforces wall time."""

from __future__ import annotations

import hashlib
import platform
import threading
import time
from dataclasses import asdict, dataclass

import wasmtime

from . import memory

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
    """One daemon thread that advances the engines' epoch every tick while guests run; stores set deadlines
    in ticks. A node with no guest running for IDLE_AFTER_S parks it, so an idle server does not wake 200
    times a second (on a shared core those wake-ups preempt the busy servers beside it); the first guest
    to run again (`enter`) wakes it."""

    def __init__(self, engines: wasmtime.Engine | list[wasmtime.Engine], tick_ms: int) -> None:
        self._engines = engines if isinstance(engines, list) else [engines]
        self.tick_ms = tick_ms
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self._last_active = time.monotonic()
        self._parked = False
        self._thread = threading.Thread(target=self._run, name="edgefn-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:  # under the lock: a tick deciding to park either sees the stop or is woken by it
            self._stop.set()
            self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def ticks_for(self, timeout_ms: int) -> int:
        # +1: the first tick may come at once, so a deadline of n ticks guarantees at least (n-1) full ticks
        return -(-timeout_ms // self.tick_ms) + 1

    @property
    def parked(self) -> bool:
        """No guest ran for IDLE_AFTER_S: the thread waits for the next one."""
        return self._parked

    def enter(self) -> None:
        """A guest is about to run: the epoch must advance until it leaves."""
        with self._lock:
            self._busy += 1
            if self._parked:
                self._parked = False
                self._wake.set()

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last_active = time.monotonic()

    def _run(self) -> None:
        period = self.tick_ms / 1000
        while not self._stop.wait(period):
            for engine in self._engines:
                engine.increment_epoch()
            with self._lock:
                park = not self._stop.is_set() and self._busy == 0 and time.monotonic() - self._last_active > IDLE_AFTER_S
                if park:
                    self._parked = True
                    self._wake.clear()
            if park:
                self._wake.wait()  # enter() or stop() sets it
