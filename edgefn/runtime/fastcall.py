"""A core guest's Store, instance and calls, made straight through wasmtime's C API.

wasmtime-py's `Func.__call__` re-reads the function type and boxes every value on each call (~30 µs), and
its `Store` costs ~20 µs more to make and drop than `wasmtime_store_new`; the same C calls with
preallocated arguments cost a few µs. With host/guest_memory.py this is where wasmtime-py's internals
(`_ffi`) are touched, so an upgrade has two places to check.
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any, Protocol

import wasmtime
from wasmtime import _ffi as ffi

_I32 = ffi.WASMTIME_I32.value
_I64 = ffi.WASMTIME_I64.value
_Val = ffi.wasmtime_val_t
_TrapPtr = ctypes.POINTER(ffi.wasm_trap_t)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)


class HasContext(Protocol):
    """A Store as the calls below use it: wasmtime-py's (components) or CoreStore."""

    def _context(self) -> Any: ...


class CoreStore:
    """A Store of a core module made and dropped through the C API, with what the sandbox sets on it."""

    __slots__ = ("_ptr", "_ctx")

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._ptr: Any = ffi.wasmtime_store_new(engine.ptr(), None, _NO_FINALIZER)
        self._ctx: Any = ffi.wasmtime_store_context(self._ptr)

    def _context(self) -> Any:
        return self._ctx

    def set_fuel(self, fuel: int) -> None:
        _check(ffi.wasmtime_context_set_fuel(self._ctx, fuel), None)

    def get_fuel(self) -> int:
        remaining = ctypes.c_uint64(0)
        _check(ffi.wasmtime_context_get_fuel(self._ctx, byref(remaining)), None)
        return remaining.value

    def set_epoch_deadline(self, ticks: int) -> None:
        ffi.wasmtime_context_set_epoch_deadline(self._ctx, ticks)

    def set_limits(self, *, table_elements: int = -1, instances: int = -1, tables: int = -1, memories: int = -1, memory_size: int = -1) -> None:
        ffi.wasmtime_store_limiter(self._ptr, memory_size, table_elements, instances, tables, memories)

    def set_wasi(self, wasi: wasmtime.WasiConfig) -> None:
        _check(ffi.wasmtime_context_set_wasi(self._ctx, wasi._consume()), None)

    def __del__(self) -> None:
        if self._ptr:
            ffi.wasmtime_store_delete(self._ptr)
            self._ptr = None


class GuestCallError(Exception):
    """A call ended in a trap or an engine error; `trap` is set for traps."""

    def __init__(self, trap: wasmtime.Trap | None, error: wasmtime.WasmtimeError | None) -> None:
        self.trap = trap
        self.error = error
        super().__init__(str(trap or error))


def export_nth(store: HasContext, instance: ffi.wasmtime_instance_t, index: int) -> ffi.wasmtime_extern_t:
    """The `index`-th export of an instance (indices were resolved from the module's types at load)."""
    item = ffi.wasmtime_extern_t()
    name_ptr = ctypes.POINTER(ctypes.c_char)()
    name_len = ctypes.c_size_t(0)
    if not ffi.wasmtime_instance_export_nth(
        store._context(), byref(instance), index, byref(name_ptr), byref(name_len), byref(item)
    ):
        raise IndexError(f"instance has no export #{index}")
    return item


def _check(error: object, trap: object) -> None:
    if error:
        raise GuestCallError(None, wasmtime.WasmtimeError._from_ptr(error))  # type: ignore[arg-type]  # a raw C pointer where wasmtime-py types its own wrapper
    if trap:
        raise GuestCallError(wasmtime.Trap._from_ptr(trap), None)  # type: ignore[arg-type]  # a raw C pointer where wasmtime-py types its own wrapper


class CallFrame:
    """The argument, result and trap cells of one instance's calls, made once (at most two i32 arguments)."""

    __slots__ = ("argv", "resv", "trap", "trap_ref")

    def __init__(self) -> None:
        self.argv = (_Val * 2)()
        self.argv[0].kind = self.argv[1].kind = _I32  # type: ignore[assignment]  # wasmtime-py annotates the kind byte as c_ubyte; ctypes takes an int
        self.resv = (_Val * 1)()
        self.trap = _TrapPtr()
        self.trap_ref = byref(self.trap)


def call(store: HasContext, func: ffi.wasmtime_extern_t, args: tuple[int, ...], result_kind: int | None, frame: CallFrame | None = None) -> int:
    """Call an exported function whose params are all i32; returns its one i32/i64 result (unsigned), or 0."""
    frame = frame or CallFrame()
    argv, resv = frame.argv, frame.resv
    for i, arg in enumerate(args):
        argv[i].of.i32 = ctypes.c_int32(arg & 0xFFFFFFFF).value
    error = ffi.wasmtime_func_call(store._context(), byref(func.of.func), argv, len(args), resv, 0 if result_kind is None else 1, frame.trap_ref)
    if error or frame.trap:
        trap, frame.trap = frame.trap, _TrapPtr()
        frame.trap_ref = byref(frame.trap)
        _check(error, trap)
    if result_kind == _I64:
        return resv[0].of.i64 & 0xFFFFFFFFFFFFFFFF
    if result_kind == _I32:
        return resv[0].of.i32 & 0xFFFFFFFF
    return 0


def instantiate(store: HasContext, pre: wasmtime.InstancePre) -> ffi.wasmtime_instance_t:
    instance = ffi.wasmtime_instance_t()
    trap = _TrapPtr()
    error = ffi.wasmtime_instance_pre_instantiate(pre.ptr(), store._context(), byref(instance), byref(trap))
    _check(error, trap)
    return instance


class GuestMemory:
    """Bounds-checked copies in and out of a linear memory: the sandbox's view of an instance's exported
    memory, and a host call's view of its caller's (host/guest_memory.py). The size and base are read on
    every copy: the guest may have grown (and so moved) the memory since the last one."""

    __slots__ = ("_ctx", "_mem")

    def __init__(self, context: Any, memory: ffi.wasmtime_memory_t) -> None:
        self._ctx = context
        self._mem = memory

    @classmethod
    def exported(cls, store: HasContext, extern: ffi.wasmtime_extern_t) -> "GuestMemory":
        return cls(store._context(), extern.of.memory)

    def size(self) -> int:
        return ffi.wasmtime_memory_data_size(self._ctx, byref(self._mem))

    def _span(self, offset: int, length: int) -> int | None:
        """The host address of [offset, offset+length), or None if it is not all inside the memory."""
        mem = byref(self._mem)
        if offset + length > ffi.wasmtime_memory_data_size(self._ctx, mem):
            return None
        return (ctypes.cast(ffi.wasmtime_memory_data(self._ctx, mem), ctypes.c_void_p).value or 0) + offset

    def write(self, offset: int, data: bytes) -> bool:
        at = self._span(offset, len(data))
        if at is None:
            return False
        ctypes.memmove(at, data, len(data))
        return True

    def read(self, offset: int, length: int) -> bytes | None:
        at = self._span(offset, length)
        return None if at is None else ctypes.string_at(at, length)


I32 = _I32
I64 = _I64
