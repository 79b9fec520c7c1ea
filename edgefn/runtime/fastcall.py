"""The two hot crossings into a guest, made straight through wasmtime's C API.

wasmtime-py's `Func.__call__` re-reads the function type and boxes every value on each call (~30 µs);
the same `wasmtime_func_call` with preallocated arguments costs a few µs. This is the only module that
touches wasmtime-py internals (`_ffi`, `_func`, `_instance`), so an upgrade has one place to check.
"""

from __future__ import annotations

import ctypes
from ctypes import byref

import wasmtime
from wasmtime import _ffi as ffi

_I32 = ffi.WASMTIME_I32.value
_I64 = ffi.WASMTIME_I64.value
_Val = ffi.wasmtime_val_t
_TrapPtr = ctypes.POINTER(ffi.wasm_trap_t)


class GuestCallError(Exception):
    """A call ended in a trap or an engine error; `trap` is set for traps."""

    def __init__(self, trap: wasmtime.Trap | None, error: wasmtime.WasmtimeError | None) -> None:
        self.trap = trap
        self.error = error
        super().__init__(str(trap or error))


def export_nth(store: wasmtime.Store, instance: wasmtime.Instance, index: int) -> ffi.wasmtime_extern_t:
    """The `index`-th export of an instance (indices were resolved from the module's types at load)."""
    item = ffi.wasmtime_extern_t()
    name_ptr = ctypes.POINTER(ctypes.c_char)()
    name_len = ctypes.c_size_t(0)
    if not ffi.wasmtime_instance_export_nth(
        store._context(), byref(instance._instance), index, byref(name_ptr), byref(name_len), byref(item)
    ):
        raise IndexError(f"instance has no export #{index}")
    return item


def _check(error: object, trap: object) -> None:
    if error:
        raise GuestCallError(None, wasmtime.WasmtimeError._from_ptr(error))  # type: ignore[arg-type]  # a raw C pointer where wasmtime-py types its own wrapper
    if trap:
        raise GuestCallError(wasmtime.Trap._from_ptr(trap), None)  # type: ignore[arg-type]  # a raw C pointer where wasmtime-py types its own wrapper


def call(store: wasmtime.Store, func: ffi.wasmtime_extern_t, args: tuple[int, ...], result_kind: int | None) -> int:
    """Call an exported function whose params are all i32; returns its one i32/i64 result (unsigned), or 0."""
    argv = (_Val * len(args))()
    for i, arg in enumerate(args):
        argv[i].kind = _I32  # type: ignore[assignment]  # wasmtime-py annotates the kind byte as c_ubyte; ctypes takes an int
        argv[i].of.i32 = ctypes.c_int32(arg & 0xFFFFFFFF).value
    nres = 0 if result_kind is None else 1
    resv = (_Val * 1)()
    trap = _TrapPtr()
    error = ffi.wasmtime_func_call(store._context(), byref(func.of.func), argv, len(args), resv, nres, byref(trap))
    _check(error, trap)
    if result_kind == _I64:
        return resv[0].of.i64 & 0xFFFFFFFFFFFFFFFF
    if result_kind == _I32:
        return resv[0].of.i32 & 0xFFFFFFFF
    return 0


def instantiate(store: wasmtime.Store, pre: wasmtime.InstancePre) -> wasmtime.Instance:
    instance = ffi.wasmtime_instance_t()
    trap = _TrapPtr()
    error = ffi.wasmtime_instance_pre_instantiate(pre.ptr(), store._context(), byref(instance), byref(trap))
    _check(error, trap)
    return wasmtime.Instance._from_raw(instance)


class GuestMemory:
    """Bounds-checked copies in and out of an exported memory."""

    __slots__ = ("_store", "_mem")

    def __init__(self, store: wasmtime.Store, extern: ffi.wasmtime_extern_t) -> None:
        self._store = store
        self._mem = extern.of.memory

    def size(self) -> int:
        return ffi.wasmtime_memory_data_size(self._store._context(), byref(self._mem))

    def _base(self) -> int:
        ptr = ffi.wasmtime_memory_data(self._store._context(), byref(self._mem))
        return ctypes.cast(ptr, ctypes.c_void_p).value or 0

    def write(self, offset: int, data: bytes) -> bool:
        if offset + len(data) > self.size():
            return False
        ctypes.memmove(self._base() + offset, data, len(data))
        return True

    def read(self, offset: int, length: int) -> bytes | None:
        if offset + length > self.size():
            return None
        return ctypes.string_at(self._base() + offset, length)


I32 = _I32
I64 = _I64
