"""What a host capability is: its core-ABI functions and its component functions, declared together."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import component as wc

from .. import _native
from ..component import put_bytes, take_bytes

__all__ = ["COMPONENT_INTERFACE", "HostCapability", "NativeHostFunction", "add_bytes_function"]

_log = logging.getLogger("edgefn.runtime")

#: the component interface every capability's component functions live in
COMPONENT_INTERFACE = "edgefn:function/host@1.0.0"


@dataclass(frozen=True)
class NativeHostFunction:
    """A core host function written in C (runtime/_native.c): the address of its wasmtime unchecked callback.
    It runs without the GIL or any Python, so a call costs what its C costs."""

    address: int


@dataclass(frozen=True)
class HostCapability:
    """One capability: its core-ABI functions (name -> (params, results, callback taking the caller's
    memory, a fastcall.GuestMemory or None, then the i32 arguments; or a NativeHostFunction) and a
    function that adds its component functions to the `edgefn:function/host` instance of a linker."""

    name: str
    core: dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType], Callable[..., Any] | NativeHostFunction]] = field(default_factory=dict)
    add_component_functions: Callable[[wc.LinkerInstance], None] | None = None


#: the C callbacks wasmtime holds for bytes functions (module-level: they outlive every linker that uses them)
_BYTES_CALLBACKS: list[Any] = []
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)


def add_bytes_function(host: wc.LinkerInstance, name: str, func: Callable[[bytes], bytes]) -> None:
    """Define `name: func(request: list<u8>) -> list<u8>` in a component linker instance as a raw callback: the
    bytes cross through the component crossing's fast copies (wasmtime-py's Func machinery costs ~0.2 µs per byte).
    `func` answers a CBOR document; should it raise, the guest gets {"error": ...} instead."""

    def callback(_data: int, _context: object, _ty: object, args: Any, nargs: int, results: Any, nresults: int) -> int:
        try:
            request = take_bytes(args[0]) if nargs == 1 else b""
            try:
                response = func(request)
            except Exception:  # noqa: BLE001 - host functions never raise
                _log.exception("%s.%s failed", COMPONENT_INTERFACE, name)
                response = _native.cbor_encode({"error": f"{name} failed inside the host"})
            if nresults == 1:
                put_bytes(response, results[0])
        except BaseException:  # noqa: BLE001 - nothing may unwind through wasm
            _log.exception("%s.%s trampoline failed", COMPONENT_INTERFACE, name)
            # no result was written: fail the call (the guest traps) rather than hand wasmtime an unset value
            return ctypes.cast(ffi.wasmtime_error_new(f"edgefn: the host's {name} failed".encode()), ctypes.c_void_p).value or 0
        return 0

    trampoline = ffi.wasmtime_component_func_callback_t(callback)
    _BYTES_CALLBACKS.append(trampoline)
    raw = name.encode()
    err = ffi.wasmtime_component_linker_instance_add_func(host.ptr(), ctypes.create_string_buffer(raw), len(raw), trampoline, None, _NO_FINALIZER)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
