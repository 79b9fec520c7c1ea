"""How a core guest's host calls arrive: raw C-API callbacks, and the guest's memory as the callee sees it.

wasmtime-py's `Linker.define_func` wraps every call in Python objects (a `Caller`, a `Val` per argument,
a slab lookup, `Caller.get("memory")` by name per access): ~60 µs for a call that reads a few bytes. Here
each host function is defined with `wasmtime_linker_define_func_unchecked`: its arguments arrive as raw
i32s, and `caller_memory` finds the exported memory once per call through the C API (as a fastcall.GuestMemory). Like fastcall.py, this
module is one of the two places that touch wasmtime-py's internals (`_ffi`).
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import byref
from typing import Any, Callable

import wasmtime
from wasmtime import _ffi as ffi

from ..context import current_context
from ..fastcall import GuestMemory
from .capability import NativeHostFunction

__all__ = ["I32", "caller_memory", "copy_out", "define_core_function", "read", "request_and_result"]

I32 = wasmtime.ValType.i32()
_MEMORY = b"memory"
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_log = logging.getLogger("edgefn.runtime")

#: a core host function: (the caller's memory, its i32 arguments...) -> its i32 result, or None if it has none
CoreHostFunction = Callable[..., "int | None"]
#: what a host function with a result returns when it failed inside the host (the ABI's -2, guest-sdk/ABI.md)
HOST_FAILURE = -2


def caller_memory(caller: Any) -> GuestMemory | None:
    """The exported `memory` of the instance that made a host call (valid during that call), if it has one."""
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_caller_export_get(caller, _MEMORY, len(_MEMORY), byref(item))
    kind: int = item.kind  # type: ignore[assignment]  # wasmtime-py annotates the kind byte as c_ubyte; ctypes reads an int
    return GuestMemory(ffi.wasmtime_caller_context(caller), item.of.memory) if found and kind == _EXTERN_MEMORY else None


def read(memory: GuestMemory | None, ptr: int, length: int) -> bytes | None:
    """`length` bytes at `ptr` (both taken as u32), or None if they are not all inside the memory."""
    return None if memory is None else memory.read(ptr & 0xFFFFFFFF, length & 0xFFFFFFFF)


def copy_out(memory: GuestMemory | None, value: bytes, buf_ptr: int, buf_cap: int) -> int:
    """The env_get/fetch_result convention: copy only if it fits, always return the full length (-2: bad buffer)."""
    if len(value) <= (buf_cap & 0xFFFFFFFF) and (memory is None or not memory.write(buf_ptr & 0xFFFFFFFF, value)):
        return -2
    return len(value)


def request_and_result(call: Callable[[bytes], bytes], pending: str) -> tuple[CoreHostFunction, CoreHostFunction]:
    """The core ABI's two-step form of a bytes host call (fetch + fetch_result, kv + kv_result): the first reads the
    request, runs `call` and keeps its answer in the context's `pending` slot, returning its length; the second
    copies it into the guest's buffer (-1: no call was made)."""

    def request(memory: GuestMemory | None, req_ptr: int, req_len: int) -> int:
        data = read(memory, req_ptr, req_len)
        if data is None:
            return -2
        answer = call(data)
        setattr(current_context(), pending, answer)
        return len(answer)

    def result(memory: GuestMemory | None, buf_ptr: int, buf_cap: int) -> int:
        answer: bytes | None = getattr(current_context(), pending)
        return -1 if answer is None else copy_out(memory, answer, buf_ptr, buf_cap)

    return request, result


#: the C callbacks handed to wasmtime: alive as long as the process (linkers are per engine, engines per process)
_CALLBACKS: list[Any] = []
#: nothing to free when wasmtime drops a definition (the callbacks stay in _CALLBACKS)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)


def _trampoline(module: str, name: str, func: CoreHostFunction, nparams: int, has_result: bool) -> Callable[[object, Any, Any, int], int]:
    """The raw callback that calls a Python host function with its caller's memory and i32 arguments."""

    def callback(_env: object, caller: Any, values: Any, _count: int) -> int:
        try:
            out = func(caller_memory(caller), *(values[i].i32 for i in range(nparams)))
        except Exception:  # noqa: BLE001 - an exception cannot unwind through wasm
            _log.exception("%s.%s failed", module, name)
            out = HOST_FAILURE
        if has_result:
            values[0].i32 = out or 0  # results overwrite the arguments in place
        return 0  # no trap

    return callback


def define_core_function(
    linker: wasmtime.Linker, module: str, name: str, params: list[wasmtime.ValType], results: list[wasmtime.ValType],
    func: CoreHostFunction | NativeHostFunction,
) -> None:
    """Define `module.name` in `linker` as a raw callback into `func` (or, native, as the C callback itself). Host
    functions never raise into wasm: an exception in `func` is logged here and the call returns HOST_FAILURE
    (or nothing, without a result)."""
    if isinstance(func, NativeHostFunction):
        c_callback = ffi.wasmtime_func_unchecked_callback_t(func.address)
    else:
        c_callback = ffi.wasmtime_func_unchecked_callback_t(_trampoline(module, name, func, len(params), bool(results)))
    _CALLBACKS.append(c_callback)
    ty = wasmtime.FuncType(params, results)
    m, n = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(), ctypes.create_string_buffer(m), len(m), ctypes.create_string_buffer(n), len(n), ty.ptr(), c_callback, None, _NO_FINALIZER,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
