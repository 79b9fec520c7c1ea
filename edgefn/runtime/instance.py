"""A live guest instance and its Store, and where the Store's WASI output goes."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import wasmtime
from wasmtime import _ffi as ffi

from . import fastcall
from .module_store import LoadedModule
from .scratch import ScratchDirectory

if TYPE_CHECKING:
    from .context import InvocationContext

__all__ = ["GuestInstance", "LogSlot"]


class LogSlot:
    """Where a Store's WASI stdout/stderr go: the context of the invocation running on it, if any.

    WASI 0.2 calls these from wasmtime's I/O threads, not the invocation's thread, so the callbacks are
    bound to this slot (swapped per invocation on a reused instance) rather than to a thread-local.
    """

    __slots__ = ("ctx",)

    def __init__(self) -> None:
        self.ctx: InvocationContext | None = None

    def stdout(self, data: bytes) -> int:
        ctx = self.ctx
        return ctx.stdout(data) if ctx is not None else len(data)

    def stderr(self, data: bytes) -> int:
        ctx = self.ctx
        return ctx.stderr(data) if ctx is not None else len(data)


class GuestInstance:
    """A live instance and its Store: made for one invocation, or kept warm in a pool between invocations.
    A core module's instance and exports live in its fastcall.CoreStore; a component's `handle` here."""

    __slots__ = ("loaded", "store", "slot", "func", "fuel_left", "needs_init", "create_ms", "invocations", "scratch", "__weakref__")

    def __init__(self, loaded: LoadedModule, store: wasmtime.Store | fastcall.CoreStore, slot: LogSlot, scratch: ScratchDirectory | None = None) -> None:
        self.loaded = loaded
        #: its /tmp, deleted with it (runtime/host/scratch.py); None: a module without WASI
        self.scratch = scratch
        if scratch is not None:  # however the instance goes (dropped, evicted, the pool closed), its /tmp goes too
            weakref.finalize(self, scratch.remove)
        self.store = store
        self.slot = slot
        self.func: ffi.wasmtime_component_func_t | None = None  # components: the `handle` function
        #: components: the fuel left after the last call of `handle` (None: not called since it was armed)
        self.fuel_left: int | None = None
        self.needs_init = False  # core: `_initialize` not run yet
        self.create_ms = 0.0
        self.invocations = 0

    def memory_refused(self) -> tuple[int, int] | None:
        """(bytes asked for in all, the budget) of the first memory growth refused, if any was."""
        return self.memory_use()[1]

    def memory_use(self) -> tuple[int, tuple[int, int] | None]:
        """The most linear memory this instance has held (all its memories; a component's at start) and
        `memory_refused()`, in one look at the Store (every invocation's REPORT reads both)."""
        if isinstance(self.store, fastcall.CoreStore):
            peak, asked, cap = self.store.memory()
            return peak, ((asked, cap) if cap else None)
        return self.loaded.info.memory_min_bytes, None
