"""The one wasmtime Engine of a process, its fingerprint, and the epoch ticker that enforces wall time."""

from __future__ import annotations

import hashlib
import platform
import threading
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


class EpochTicker:
    """One daemon thread that advances the engines' epoch every tick; stores set deadlines in ticks."""

    def __init__(self, engines: wasmtime.Engine | list[wasmtime.Engine], tick_ms: int) -> None:
        self._engines = engines if isinstance(engines, list) else [engines]
        self.tick_ms = tick_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefn-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def ticks_for(self, timeout_ms: int) -> int:
        # +1: the first tick may come at once, so a deadline of n ticks guarantees at least (n-1) full ticks
        return -(-timeout_ms // self.tick_ms) + 1

    def _run(self) -> None:
        period = self.tick_ms / 1000
        while not self._stop.wait(period):
            for engine in self._engines:
                engine.increment_epoch()
