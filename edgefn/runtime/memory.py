"""Linear memory that counts against one budget per Store: how `memory_mb` caps every memory a guest makes.

wasmtime's store limiter caps each memory on its own (`memory_size` is per memory), so a module with 40
unexported memories, or a component with several, could take 40 times its cap; and a refused
`memory.grow` just returns -1, leaving the host to guess whether a later trap was the cap. So edgefn
allocates linear memory itself (wasmtime's host memory creator, `wasmtime_config_host_memory_creator_set`):
each Store gets a `MemoryBudget` of `memory_mb`, every memory it creates or grows is charged to it,
and a creation or growth past it is refused and recorded. The budget then gives REPORT's `Max Memory
Used` (all memories, exported or not) and decides `MemoryLimitExceeded` from what was refused, with no
heuristic.

Each memory is one mmap reservation (the reservation plus guard region wasmtime asks for, PROT_NONE) of
which the accessible prefix is made read-write as it grows, which is what wasmtime's own allocator
does; the engine's bounds-check elision relies on that guard region, which stays inaccessible.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from ctypes import c_size_t, c_void_p
from dataclasses import dataclass

from wasmtime import _bindings as b
from wasmtime import _ffi as ffi

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = c_void_p
_mmap.argtypes = [c_void_p, c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_mprotect = _libc.mprotect
_mprotect.restype = ctypes.c_int
_mprotect.argtypes = [c_void_p, c_size_t, ctypes.c_int]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [c_void_p, c_size_t]

_PROT_NONE, _PROT_RW = 0, 3
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value
_OS_PAGE = os.sysconf("SC_PAGE_SIZE")
#: what a memory without a static reservation may grow to in place (wasm32's whole address space)
_DYNAMIC_RESERVATION = 4 * 1024**3


class MemoryBudget:
    """The linear-memory bytes one Store may hold, what it holds, and the first request it refused."""

    __slots__ = ("cap", "used", "peak", "refused", "_lock")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        #: (bytes asked for in all, the cap) of the first creation or growth refused; None if none was
        self.refused: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def charge(self, delta: int) -> bool:
        with self._lock:
            if self.used + delta > self.cap:
                if self.refused is None:
                    self.refused = (self.used + delta, self.cap)
                return False
            self.used += delta
            self.peak = max(self.peak, self.used)
            return True

    def credit(self, delta: int) -> None:
        with self._lock:
            self.used -= delta


@dataclass
class _Region:
    base: int
    mapped: int  # bytes reserved (PROT_NONE beyond `size`)
    size: int  # accessible bytes
    maximum: int
    budget: MemoryBudget


#: the budget new memories on this thread are charged to (set around instantiation by the sandbox)
_current = threading.local()
#: live regions by id (the `env` wasmtime hands back to the callbacks)
_regions: dict[int, _Region] = {}
_regions_lock = threading.Lock()
_next_id = iter(range(1, 1 << 62))


def charging(budget: MemoryBudget | None) -> None:
    """Memories created on this thread from now on are charged to `budget` (None: an unlimited budget)."""
    _current.budget = budget


def _error(message: str) -> int:
    err = ffi.wasmtime_error_new(ctypes.create_string_buffer(message.encode()))
    return ctypes.cast(err, c_void_p).value or 0


def _new_memory(_env: int, _ty: object, minimum: int, maximum: int, reserved: int, guard: int, out: "ctypes._Pointer[b.wasmtime_linear_memory_t]") -> int:
    try:
        budget: MemoryBudget | None = getattr(_current, "budget", None)
        if budget is None:
            budget = MemoryBudget(1 << 62)
        if not budget.charge(minimum):
            return _error(f"memory_mb: a new memory of {minimum} bytes would pass the budget of {budget.cap} bytes")
        reservation = reserved or min(max(maximum, minimum), _DYNAMIC_RESERVATION)
        mapped = _round(max(reservation, minimum) + guard)
        base = _mmap(None, mapped, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        if base is None or base == _MAP_FAILED:
            budget.credit(minimum)
            return _error(f"mmap of {mapped} bytes failed: {os.strerror(ctypes.get_errno())}")
        if minimum and _mprotect(base, _round(minimum), _PROT_RW) != 0:
            _munmap(base, mapped)
            budget.credit(minimum)
            return _error(f"mprotect failed: {os.strerror(ctypes.get_errno())}")
        region = _Region(base, mapped, minimum, min(maximum, max(reservation, minimum)), budget)
        with _regions_lock:
            key = next(_next_id)
            _regions[key] = region
        mem = out.contents
        # wasmtime-py annotates these fields as pointers; ctypes takes the int and the callbacks as they are
        mem.env = key  # type: ignore[assignment]  # see above
        mem.get_memory = _GET  # type: ignore[assignment]  # see above
        mem.grow_memory = _GROW  # type: ignore[assignment]  # see above
        mem.finalizer = _FREE  # type: ignore[assignment]  # see above
        return 0
    except BaseException as exc:  # noqa: BLE001 - nothing may unwind into wasmtime
        return _error(f"edgefn memory creator failed: {exc!r}")


def _get_memory(env: int, size: "ctypes._Pointer[c_size_t]", maximum: "ctypes._Pointer[c_size_t]") -> int:
    region = _regions[env]
    size[0] = region.size
    maximum[0] = region.maximum
    return region.base


def _grow_memory(env: int, new_size: int) -> int:
    try:
        region = _regions[env]
        if new_size <= region.size:
            return 0
        if new_size > region.maximum:
            return _error(f"a memory cannot grow past {region.maximum} bytes")
        if not region.budget.charge(new_size - region.size):
            return _error(f"memory_mb: growing to {new_size} bytes would pass the budget of {region.budget.cap} bytes")
        start = _round(region.size)
        end = _round(new_size)
        if end > start and _mprotect(region.base + start, end - start, _PROT_RW) != 0:
            region.budget.credit(new_size - region.size)
            return _error(f"mprotect failed: {os.strerror(ctypes.get_errno() or errno.ENOMEM)}")
        region.size = new_size
        return 0
    except BaseException as exc:  # noqa: BLE001 - nothing may unwind into wasmtime
        return _error(f"edgefn memory grow failed: {exc!r}")


def _free(env: int) -> None:
    with _regions_lock:
        region = _regions.pop(env, None)
    if region is not None:
        _munmap(region.base, region.mapped)
        region.budget.credit(region.size)


def _round(n: int) -> int:
    return -(-n // _OS_PAGE) * _OS_PAGE


_NEW = b.wasmtime_new_memory_callback_t(_new_memory)
_GET = b.wasmtime_memory_get_callback_t(_get_memory)
_GROW = b.wasmtime_memory_grow_callback_t(_grow_memory)
_FREE = ctypes.CFUNCTYPE(None, c_void_p)(_free)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, c_void_p)(lambda _env: None)


def install(config: object) -> None:
    """Make every memory of engines built from `config` (a wasmtime.Config) come from this module."""
    creator = b.wasmtime_memory_creator_t()
    # wasmtime-py annotates these fields as pointers; ctypes takes None and the callbacks as they are
    creator.env = None  # type: ignore[assignment]  # see above
    creator.new_memory = _NEW  # type: ignore[assignment]  # see above
    creator.finalizer = _NO_FINALIZER  # type: ignore[assignment]  # see above
    ffi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(creator))  # type: ignore[attr-defined]  # `config` is typed object to keep wasmtime out of the signature


__all__ = ["MemoryBudget", "charging", "install"]
