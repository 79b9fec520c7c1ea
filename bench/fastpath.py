"""What a leaner call path would buy: a bench-only prototype of the reused-instance invocation.

edgefn/runtime/fastcall.py builds a new ctypes argument array, result array and trap pointer for every call,
goes through wasmtime-py's Python wrapper of each C function, and re-reads the memory size and base pointer
(`ctypes.cast`) for each copy. This prototype does the same four steps (alloc, write event, handle, read
result) with everything preallocated once per instance, the raw ctypes function objects, and the memory base
read once per call sequence. It is measured next to micro.py's raw second call, on the same guests.
"""

from __future__ import annotations

import ctypes
from ctypes import byref

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

from edgefn.runtime import fastcall

_call = _bindings._wasmtime_func_call
_data = _bindings._wasmtime_memory_data
_size = _bindings._wasmtime_memory_data_size


class LeanInstance:
    """One instance's two exports and memory, with every ctypes object the calls need made up front."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, info) -> None:  # type: ignore[no-untyped-def]
        self.ctx = store._context()
        alloc = fastcall.export_nth(store, instance, info.alloc_export)
        handle = fastcall.export_nth(store, instance, info.handle_export)
        memory = fastcall.export_nth(store, instance, info.memory_export)
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
