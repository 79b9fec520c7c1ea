"""Raw ctypes call paths the micro bench compares edgefn's runtime with (edgefn itself calls wasmtime
from C, edgefn/runtime/_native.c).

`instantiate`, `export`, `call` and `memory`: one wasmtime C-API call each, through wasmtime-py's ctypes
wrappers, new argument cells per call. `LeanInstance`: the reused-instance steps (alloc, write event,
handle, read result) with every ctypes object made once per instance. `RawFresh`: the fresh-instance steps
the same way. They show what the same work costs from Python without the C module.
"""

from __future__ import annotations

import ctypes
from ctypes import byref

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

from edgefn.runtime import fastcall

_call = _bindings._wasmtime_func_call
_I32, _I64 = ffi.WASMTIME_I32.value, ffi.WASMTIME_I64.value


def _check(error: object, trap: object) -> None:
    if error or trap:
        raise RuntimeError(f"call failed: {wasmtime.WasmtimeError._from_ptr(error) if error else wasmtime.Trap._from_ptr(trap)}")  # type: ignore[arg-type]


def instantiate(store: wasmtime.Store, pre: wasmtime.InstancePre) -> ffi.wasmtime_instance_t:
    instance = ffi.wasmtime_instance_t()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    _check(ffi.wasmtime_instance_pre_instantiate(pre.ptr(), store._context(), byref(instance), byref(trap)), trap)
    return instance


def export(store: wasmtime.Store, instance: ffi.wasmtime_instance_t, index: int) -> ffi.wasmtime_extern_t:
    item = ffi.wasmtime_extern_t()
    name_ptr, name_len = ctypes.POINTER(ctypes.c_char)(), ctypes.c_size_t(0)
    if not ffi.wasmtime_instance_export_nth(store._context(), byref(instance), index, byref(name_ptr), byref(name_len), byref(item)):
        raise IndexError(index)
    return item


def call(store: wasmtime.Store, func: ffi.wasmtime_extern_t, args: tuple[int, ...], result_kind: int) -> int:
    """Call an export whose params are i32s; its one i32 (I32) or i64 (I64) result, unsigned."""
    argv = (ffi.wasmtime_val_t * 2)()
    for i, arg in enumerate(args):
        argv[i].kind = _I32
        argv[i].of.i32 = ctypes.c_int32(arg & 0xFFFFFFFF).value
    resv = (ffi.wasmtime_val_t * 1)()
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    _check(_call(store._context(), byref(func.of.func), argv, len(args), resv, 1, byref(trap)), trap)
    return resv[0].of.i64 & 0xFFFFFFFFFFFFFFFF if result_kind == _I64 else resv[0].of.i32 & 0xFFFFFFFF


def memory(store: wasmtime.Store, extern: ffi.wasmtime_extern_t) -> fastcall.GuestMemory:
    return fastcall.GuestMemory(store._context(), extern.of.memory)


I32, I64 = _I32, _I64
_data = _bindings._wasmtime_memory_data
_size = _bindings._wasmtime_memory_data_size


class LeanInstance:
    """One instance's two exports and memory, with every ctypes object the calls need made up front."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, info) -> None:  # type: ignore[no-untyped-def]
        self.ctx = store._context()
        alloc = export(store, instance, info.alloc_export)
        handle = export(store, instance, info.handle_export)
        memory = export(store, instance, info.memory_export)
        self._keep = (alloc, handle, memory)
        self.alloc, self.handle, self.mem = byref(alloc.of.func), byref(handle.of.func), byref(memory.of.memory)
        self.argv = (ffi.wasmtime_val_t * 2)()
        self.argv[0].kind = self.argv[1].kind = ffi.WASMTIME_I32.value
        self.resv = (ffi.wasmtime_val_t * 1)()
        self.trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self.trap_ref = byref(self.trap)

    def invoke(self, event: bytes) -> bytes:
        n = len(event)
        argv, resv = self.argv, self.resv
        argv[0].of.i32 = n
        if _call(self.ctx, self.alloc, argv, 1, resv, 1, self.trap_ref) or self.trap:
            raise RuntimeError("alloc failed")
        ptr = resv[0].of.i32 & 0xFFFFFFFF
        base = ctypes.cast(_data(self.ctx, self.mem), ctypes.c_void_p).value or 0
        if ptr == 0 or ptr + n > _size(self.ctx, self.mem):
            raise RuntimeError("bad alloc")
        ctypes.memmove(base + ptr, event, n)
        argv[0].of.i32 = ptr
        argv[1].of.i32 = n
        if _call(self.ctx, self.handle, argv, 2, resv, 1, self.trap_ref) or self.trap:
            raise RuntimeError("handle failed")
        packed = resv[0].of.i64 & 0xFFFFFFFFFFFFFFFF
        rptr, rlen = packed >> 32, packed & 0xFFFFFFFF
        size = _size(self.ctx, self.mem)  # the guest may have grown memory: base and size re-read once
        if rptr + rlen > size:
            raise RuntimeError("result out of bounds")
        base = ctypes.cast(_data(self.ctx, self.mem), ctypes.c_void_p).value or 0
        return ctypes.string_at(base + rptr, rlen)


class RawFresh:
    """The physical floor of a fresh-instance invocation from Python: the same steps as the sandbox (Store,
    fuel, limits, epoch deadline, instantiate, alloc, write the event, handle, read the result, drop), each
    one raw C-API call with every ctypes object made up front, and nothing else (no report, no errors)."""

    def __init__(self, engine: wasmtime.Engine, pre: wasmtime.InstancePre, info, fuel: int, ticks: int) -> None:  # type: ignore[no-untyped-def]
        self.engine_ptr, self.pre_ptr, self.info, self.fuel, self.ticks = engine.ptr(), pre.ptr(), info, fuel, ticks
        self.fin = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _d: None)
        self.inst = ffi.wasmtime_instance_t()
        self.item = ffi.wasmtime_extern_t()
        self.name_ptr, self.name_len = ctypes.POINTER(ctypes.c_char)(), ctypes.c_size_t(0)
        self.argv = (ffi.wasmtime_val_t * 2)()
        self.argv[0].kind = self.argv[1].kind = ffi.WASMTIME_I32.value
        self.resv = (ffi.wasmtime_val_t * 1)()
        self.trap = ctypes.POINTER(ffi.wasm_trap_t)()

    def _export(self, ctx, index: int):  # type: ignore[no-untyped-def]
        item = ffi.wasmtime_extern_t()
        _bindings._wasmtime_instance_export_nth(ctx, byref(self.inst), index, byref(self.name_ptr), byref(self.name_len), byref(item))
        return item

    def invoke(self, event: bytes) -> bytes:
        store = _bindings._wasmtime_store_new(self.engine_ptr, None, self.fin)
        try:
            ctx = _bindings._wasmtime_store_context(store)
            _bindings._wasmtime_context_set_fuel(ctx, self.fuel)
            _bindings._wasmtime_store_limiter(store, -1, 16384, 1, 4, 16)
            _bindings._wasmtime_context_set_epoch_deadline(ctx, self.ticks)
            if _bindings._wasmtime_instance_pre_instantiate(self.pre_ptr, ctx, byref(self.inst), byref(self.trap)) or self.trap:
                raise RuntimeError("instantiate failed")
            alloc, handle, memory = (self._export(ctx, i) for i in (self.info.alloc_export, self.info.handle_export, self.info.memory_export))
            mem = byref(memory.of.memory)
            n = len(event)
            self.argv[0].of.i32 = n
            if _call(ctx, byref(alloc.of.func), self.argv, 1, self.resv, 1, byref(self.trap)) or self.trap:
                raise RuntimeError("alloc failed")
            ptr = self.resv[0].of.i32 & 0xFFFFFFFF
            ctypes.memmove((ctypes.cast(_data(ctx, mem), ctypes.c_void_p).value or 0) + ptr, event, n)
            self.argv[0].of.i32, self.argv[1].of.i32 = ptr, n
            if _call(ctx, byref(handle.of.func), self.argv, 2, self.resv, 1, byref(self.trap)) or self.trap:
                raise RuntimeError("handle failed")
            packed = self.resv[0].of.i64 & 0xFFFFFFFFFFFFFFFF
            return ctypes.string_at((ctypes.cast(_data(ctx, mem), ctypes.c_void_p).value or 0) + (packed >> 32), packed & 0xFFFFFFFF)
        finally:
            _bindings._wasmtime_store_delete(store)
