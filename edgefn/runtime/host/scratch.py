"""/tmp: each instance's private scratch directory, capped in size (Lambda's ephemeral storage).

A core module that imports WASI gets a host directory of its own preopened at `/tmp`, made with its
instance and deleted with it (a fresh instance per request: per request; a warm one: kept across its
invocations). wasmtime's WASI resolves every path inside the preopen (cap-std): `..` past it and symlinks
out of it are refused. What WASI cannot do is cap the directory's size, so the calls that make data or
entries take room (fd_write, fd_pwrite, fd_allocate, and path_open, path_create_directory and
path_symlink when they create) are shadowed here: each asks the instance's ScratchDirectory for the room
(runtime/scratch.py) first, then runs wasmtime's own function with the same arguments (through a relay instance that lends it the
guest's memory). Past the cap the guest gets ENOSPC,
and the invocation's REPORT names EphemeralStorageLimitExceeded (docs/security.md).
"""

from __future__ import annotations

import ctypes
import logging
import struct
from ctypes import byref
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from .. import abi
from ..context import current_context
from ..scratch import BLOCK
from .guest_memory import caller_memory

__all__ = ["ENOSPC", "shadow_wasi_growth"]

_log = logging.getLogger("edgefn.runtime")

#: WASI preview 1 errno: no space left on device
ENOSPC = 51
_OFLAGS_CREAT = 1
_MODULE = abi.WASI_MODULE.encode()


# --- the shadowed WASI functions -------------------------------------------------------------------

_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()
#: name -> (params, results) of each WASI preview 1 function that can take room
_SIGNATURES: dict[str, list[wasmtime.ValType]] = {
    "fd_write": [_I32, _I32, _I32, _I32],
    "fd_pwrite": [_I32, _I32, _I32, _I64, _I32],
    "fd_allocate": [_I32, _I64, _I64],
    "path_open": [_I32, _I32, _I32, _I32, _I32, _I64, _I64, _I32, _I32],
    "path_create_directory": [_I32, _I32, _I32],
    "path_symlink": [_I32, _I32, _I32, _I32, _I32],
}
_CALLBACKS: list[Any] = []
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)
_IOVEC = struct.Struct("<II")


def _growth(name: str, caller: Any, values: Any) -> int:
    """The room a call may take: the bytes a write carries, what fd_allocate asks, a block for a new entry;
    0 for what takes none (stdout and stderr, a path_open that creates nothing)."""
    if name in ("fd_write", "fd_pwrite"):
        if values[0].i32 <= 2:
            return 0  # stdin, stdout, stderr: the function's log, not /tmp
        memory = caller_memory(caller)
        iovs, count = values[1].i32 & 0xFFFFFFFF, values[2].i32 & 0xFFFFFFFF
        raw = memory.read(iovs, count * _IOVEC.size) if memory is not None and count < 1 << 16 else None
        return sum(length for _, length in _IOVEC.iter_unpack(raw)) if raw else 0
    if name == "fd_allocate":
        return max(0, int(values[2].i64))
    if name == "path_open":
        return BLOCK if values[4].i32 & _OFLAGS_CREAT else 0
    return BLOCK  # path_create_directory, path_symlink


def _relay_wat() -> str:
    """A module that calls wasmtime's WASI functions with the guest's memory as its own: WASI preview 1 reads and
    writes the memory its caller exports, and a host function has no caller of its own."""
    imports, funcs = [], []
    for name, params in _SIGNATURES.items():
        types = " ".join(p.__str__() for p in params)
        args = " ".join(f"(local.get {i})" for i in range(len(params)))
        imports.append(f'(import "wasi" "{name}" (func ${name} (param {types}) (result i32)))')
        funcs.append(f'(func (export "{name}") (param {types}) (result i32) (call ${name} {args}))')
    return f'(module (import "guest" "memory" (memory 0)) {" ".join(imports)} (export "memory" (memory 0)) {" ".join(funcs)})'


class _Relay:
    """The relay module of an engine, and wasmtime's WASI to instantiate it with (kept as long as the callbacks)."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self.module = wasmtime.Module(engine, _relay_wat())
        self.wasi = wasmtime.Linker(engine)
        self.wasi.define_wasi()

    def instantiate(self, caller: Any, context: Any) -> dict[bytes, Any]:
        """The relay's functions in the caller's Store, bound to the caller's exported memory."""
        memory = ffi.wasmtime_extern_t()
        if not ffi.wasmtime_caller_export_get(caller, b"memory", 6, byref(memory)):
            raise wasmtime.WasmtimeError("the guest exports no memory for WASI to use")
        imports = (ffi.wasmtime_extern_t * (1 + len(_SIGNATURES)))()
        imports[0] = memory
        for i, name in enumerate(_SIGNATURES, 1):
            n = name.encode()
            if not ffi.wasmtime_linker_get(self.wasi.ptr(), context, _MODULE, len(_MODULE), n, len(n), byref(imports[i])):
                raise wasmtime.WasmtimeError(f"{abi.WASI_MODULE}.{name} is not defined")
        instance = ffi.wasmtime_instance_t()
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_instance_new(context, self.module.ptr(), imports, len(imports), byref(instance), byref(trap))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        funcs: dict[bytes, Any] = {}
        for name in _SIGNATURES:
            n, item = name.encode(), ffi.wasmtime_extern_t()
            ffi.wasmtime_instance_export_get(context, byref(instance), n, len(n), byref(item))
            funcs[n] = item.of.func
        return funcs


def _shadow(name: str, relay: _Relay) -> Any:
    n = name.encode()

    def callback(_env: object, caller: Any, values: Any, count: int) -> int:
        ctx = current_context()
        scratch = ctx.scratch if ctx is not None else None
        context = ffi.wasmtime_caller_context(caller)
        try:
            if scratch is not None:
                growth = _growth(name, caller, values)
                if growth and not scratch.admit(growth):
                    values[0].i32 = ENOSPC
                    return 0
                if not scratch.originals:
                    scratch.originals = relay.instantiate(caller, context)
                original = scratch.originals[n]
            else:  # outside an invocation (no /tmp to count against): a relay for this call only
                original = relay.instantiate(caller, context)[n]
        except Exception as exc:  # noqa: BLE001 - an exception cannot unwind through wasm
            _log.exception("%s.%s: the /tmp check failed", abi.WASI_MODULE, name)
            return _trap(f"{abi.WASI_MODULE}.{name}: {exc}")
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call_unchecked(context, byref(original), values, count, byref(trap))
        if error:
            return _trap(str(wasmtime.WasmtimeError._from_ptr(error)))
        return int(ctypes.cast(trap, ctypes.c_void_p).value or 0)

    return callback


def _trap(message: str) -> int:
    m = message.encode()
    return ctypes.cast(ffi.wasmtime_trap_new(ctypes.create_string_buffer(m), len(m)), ctypes.c_void_p).value or 0


def shadow_wasi_growth(linker: wasmtime.Linker, engine: wasmtime.Engine) -> None:
    """Define, over `linker`'s WASI, the functions that take room in /tmp: each checks the cap, then calls
    wasmtime's own through the instance's relay (a second instance in its Store, made at its first such call)."""
    relay = _Relay(engine)
    linker.allow_shadowing = True
    for name, params in _SIGNATURES.items():
        c_callback = ffi.wasmtime_func_unchecked_callback_t(_shadow(name, relay))
        _CALLBACKS.append((c_callback, relay))
        ty = wasmtime.FuncType(params, [_I32])
        n = name.encode()
        error = ffi.wasmtime_linker_define_func_unchecked(
            linker.ptr(), ctypes.create_string_buffer(_MODULE), len(_MODULE), ctypes.create_string_buffer(n), len(n), ty.ptr(), c_callback, None, _NO_FINALIZER,
        )
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
    linker.allow_shadowing = False
