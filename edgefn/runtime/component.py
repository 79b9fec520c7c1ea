"""Components: the component flavour of guest ABI v1 (Python guests from componentize-py, JS/TS from componentize-qjs).

A component exports the edgefn:function world's `handle: func(event: list<u8>) -> list<u8>` (one CBOR
event in, one CBOR result out, as a core module's edgefn_handle; a Python guest's `handle-marshal` takes the
event and gives the result as CPython marshal documents instead) and imports `edgefn:function/host@1.0.0`
(log, env-get, fetch, kv: the semantics of ABI v1's edgefn:host/v1) plus WASI 0.2, which the host grants
with least privilege. See guest-sdk/ABI.md section 8 and guest-sdk/python/wit/edgefn.wit.

This module checks components at load (what a binary is and imports: wasm_binary.py), builds the one component Linker of an engine, and
makes the one hot crossing (`call_handle`) straight through wasmtime's C API, in C (runtime/_native.c):
wasmtime-py's `Func.__call__` converts a `list<u8>` one Python object per byte, which costs ~1 µs a byte,
and each of its foreign calls hands the GIL off. Like fastcall.py it touches wasmtime-py internals (`_ffi`, `_func`).
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import byref
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _bindings as b
from wasmtime import _ffi as ffi
from wasmtime import component as wc

from ..core.exceptions import (
    AbiMismatch,
    ComponentImportNotAllowed,
    InvalidModule,
    MissingExport,
)
from . import _native, abi, fastcall
from .wasm_binary import MemoryLayout

log = logging.getLogger("edgefn.runtime")

HOST_PACKAGE = "edgefn:function"
HOST_INTERFACE = "edgefn:function/host@1.0.0"  # = host.COMPONENT_INTERFACE (host/ imports this module, not the reverse)
WORLD_VERSION = "1.0.0"
HANDLE_EXPORT = "handle"
#: the edge-function-py world's handle with a `marshal` event (guest-sdk/python/wit/edgefn.wit)
HANDLE_MARSHAL_EXPORT = "handle-marshal"
HANDLE_TYPE = "func(event: list<u8>) -> list<u8>"
#: the WASI 0.2 packages `Linker.add_wasip2()` provides (wasi:http is not granted)
WASI_PACKAGES = ("wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:cli/", "wasi:filesystem/", "wasi:sockets/")
WASI_VERSION = "@0.2."

_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}


# --- load-time checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentInfo:
    """Static facts about a component, found once at load so the request path never looks them up."""

    #: the export each invocation calls: handle-marshal where the component has it, else handle
    handle_export: wc.ExportIndex
    memory: MemoryLayout
    #: it imports wasi:filesystem, so it gets a /tmp (a tmpfs mount each instance: runtime/scratch.py)
    uses_filesystem: bool = False
    #: how `handle_export`'s event and result are encoded (abi.encode_event, abi.decode_result)
    encoding: abi.DocumentEncoding = "cbor"

    @property
    def memory_min_bytes(self) -> int:
        return self.memory.largest_min_bytes


def _is_bytes_list(ty: object) -> bool:
    return isinstance(ty, wc.ListType) and isinstance(ty.element, wc.U8)


def check_imports(names: list[str], function: str) -> None:
    """Refuse a component importing anything not granted, naming every such import (before any compile)."""
    refused = []
    for name in names:
        if name == HOST_INTERFACE:
            continue
        if name.startswith(HOST_PACKAGE + "/"):
            version = name.rpartition("@")[2]
            major = version.split(".")[0]
            if major.isdigit() and version != WORLD_VERSION:
                raise AbiMismatch(function, [int(major)], abi.ABI_VERSION)
            refused.append(name)
        elif not (name.startswith(WASI_PACKAGES) and WASI_VERSION in name):
            refused.append(name)
    if refused:
        raise ComponentImportNotAllowed(function, refused, HOST_INTERFACE)


def inspect_component(component: wc.Component, engine: wasmtime.Engine, function: str, memory: MemoryLayout) -> ComponentInfo:
    """Refuse a component that imports anything not granted or lacks `handle`; describe the rest."""
    ctype = component.type
    imports = list(ctype.imports(engine))
    check_imports(imports, function)
    exports = ctype.exports(engine)
    if not _is_handle(exports.get(HANDLE_EXPORT)):
        raise MissingExport(function, HANDLE_EXPORT, HANDLE_TYPE)
    encoding: abi.DocumentEncoding = "marshal" if _is_handle(exports.get(HANDLE_MARSHAL_EXPORT)) else "cbor"
    name = HANDLE_MARSHAL_EXPORT if encoding == "marshal" else HANDLE_EXPORT
    index = component.get_export_index(name)
    if index is None:  # pragma: no cover - the type said it is there
        raise MissingExport(function, name, HANDLE_TYPE)
    uses_filesystem = any(name.startswith("wasi:filesystem/") for name in imports)
    return ComponentInfo(handle_export=index, memory=memory, uses_filesystem=uses_filesystem, encoding=encoding)


def _is_handle(item: object) -> bool:
    ty = getattr(item, "ty", None)
    return isinstance(ty, wc.FuncType) and len(ty.params) == 1 and _is_bytes_list(ty.params[0][1]) and _is_bytes_list(ty.result)


def check_links(engine: wasmtime.Engine, linker: wc.Linker, component: wc.Component, function: str) -> None:
    """Instantiate once without limits, at load: an import of the right name but the wrong type fails here,
    not on the request path (where an instantiation failure means the memory cap)."""
    store = wasmtime.Store(engine)
    store.set_fuel(10**12)
    store.set_epoch_deadline(1 << 40)
    store.set_wasi(wasmtime.WasiConfig())
    try:
        linker.instantiate(store, component)
    except wasmtime.WasmtimeError as exc:
        raise InvalidModule(function, f"cannot be linked against the edgefn:function world: {str(exc).splitlines()[0]}") from None


# --- the hot crossing --------------------------------------------------------------------------------------

_VAL = ctypes.sizeof(ffi.wasmtime_component_val_t)
_VAL_OF = ffi.wasmtime_component_val_t.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value


# the hot crossing's steps in C, the GIL released only while the guest runs; host capabilities' list<u8>
# arguments and results (fetch, kv) cross through put_bytes / take_bytes
_native.init_component(
    fastcall.function_address(b._wasmtime_component_vallist_new_uninit), fastcall.function_address(b._wasmtime_component_val_delete),
    fastcall.function_address(b._wasmtime_component_func_call), fastcall.function_address(b._wasmtime_component_func_post_return),
    _U8, _LIST, _VAL, _VAL_OF,
)


def _view(address: int, size: int) -> memoryview:
    return memoryview((ctypes.c_ubyte * size).from_address(address)).cast("B")


def put_bytes(data: bytes, out: ffi.wasmtime_component_val_t) -> None:
    """Make `out` the list<u8> holding `data`: each byte is one 32-byte value, filled by strided copies."""
    n = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(byref(raw), n)
    if n:
        view = _view(ctypes.cast(raw.data, ctypes.c_void_p).value or 0, n * _VAL)
        view[0::_VAL] = bytes((_U8,)) * n
        view[_VAL_OF::_VAL] = data
    out.kind = _LIST
    out.of.list = raw


def take_bytes(val: ffi.wasmtime_component_val_t) -> bytes:
    """The bytes of a list<u8> value, which is then freed."""
    if val.kind != _LIST:
        raise TypeError(f"expected a list<u8>, got value kind {val.kind}")
    lst = val.of.list
    n = lst.size
    out = bytes(_view(ctypes.cast(lst.data, ctypes.c_void_p).value or 0, n * _VAL)[_VAL_OF::_VAL]) if n else b""
    ffi.wasmtime_component_vallist_delete(byref(lst))
    return out


class ComponentCallError(Exception):
    """A component call or instantiation failed: a trap (with its code), a WASI exit, or another error."""

    def __init__(self, trap_code: wasmtime.TrapCode | None, exit_status: int | None, frames: list[str], message: str) -> None:
        self.trap_code = trap_code
        self.exit_status = exit_status
        self.frames = frames
        self.message = message
        #: the fuel the Store had left when the call failed (call_handle's failures)
        self.fuel_left: int | None = None
        super().__init__(message)


def _frames(err: "ctypes._Pointer[Any]") -> list[str]:
    vec = ffi.wasm_frame_vec_t()
    ffi.wasmtime_error_wasm_trace(err, byref(vec))
    frames = []
    try:
        for i in range(min(vec.size, 16)):
            frame = vec.data[i]
            name = ffi.wasmtime_frame_func_name(frame)
            func = ffi.to_str(name.contents) if name else f"func[{ffi.wasm_frame_func_index(frame)}]"
            module = ffi.wasmtime_frame_module_name(frame)
            where = ffi.to_str(module.contents) + "!" if module else ""
            frames.append(f"{where}{func} @ 0x{ffi.wasm_frame_module_offset(frame):x}")
    finally:
        ffi.wasm_frame_vec_delete(byref(vec))
    return frames


def error_from_ptr(err: "ctypes._Pointer[Any]") -> ComponentCallError:
    """Classify and free a wasmtime_error_t from a component call.

    The C API gives component traps as wasmtime_error_t, which wraps the same anyhow error as wasm_trap_t
    (one field, the same layout), so `wasmtime_trap_code` reads the trap code from it.
    """
    try:
        status = ctypes.c_int(0)
        exit_status = status.value if ffi.wasmtime_error_exit_status(err, byref(status)) else None
        code = ctypes.c_uint8(0)
        trap_code = None
        if ffi.wasmtime_trap_code(ctypes.cast(err, ctypes.POINTER(ffi.wasm_trap_t)), byref(code)):
            trap_code = wasmtime.TrapCode(code.value)
        frames = _frames(err)
        vec = ffi.wasm_byte_vec_t()
        ffi.wasmtime_error_message(err, byref(vec))
        message = ffi.to_str(vec)
        ffi.wasm_byte_vec_delete(byref(vec))
    finally:
        ffi.wasmtime_error_delete(err)
    return ComponentCallError(trap_code, exit_status, frames, message)


def instantiate(linker: wc.Linker, store: wasmtime.Store, component: wc.Component) -> wc.Instance:
    instance = ffi.wasmtime_component_instance_t()
    err = ffi.wasmtime_component_linker_instantiate(linker.ptr(), store._context(), component.ptr(), byref(instance))
    if err:
        raise error_from_ptr(err)
    return wc.Instance._from_raw(instance)


def handle_func(store: wasmtime.Store, instance: wc.Instance, index: wc.ExportIndex) -> ffi.wasmtime_component_func_t:
    func = ffi.wasmtime_component_func_t()
    if not ffi.wasmtime_component_instance_get_func(byref(instance._instance), store._context(), index.ptr(), byref(func)):
        raise ComponentCallError(None, None, [], f"the instance has no {HANDLE_EXPORT!r} function")
    return func


def call_handle(store: wasmtime.Store, func: ffi.wasmtime_component_func_t, event: bytes, fuel: int | None = None, epoch_ticks: int = 0) -> tuple[bytes, int]:
    """`handle(event)`: one call, the event and the result copied as list<u8>, then post-return; the Store armed
    first with `fuel` and `epoch_ticks` unless `fuel` is None. Returns the result and the fuel left."""
    context = ctypes.cast(store._context(), ctypes.c_void_p).value or 0
    out, err, left = _native.call_component(context, ctypes.addressof(func), event, fuel, epoch_ticks)
    if out is None:
        failed = error_from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
        failed.fuel_left = left
        raise failed
    return out, left
