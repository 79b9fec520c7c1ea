"""What a guest may import, and the checks that a module speaks ABI v1 (done once, at load)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import cbor2
import wasmtime

from ..core.exceptions import AbiMismatch, ImportNotAllowed, MissingExport
from . import abi
from .context import current_context
from .outbound import MAX_FETCHES_PER_INVOCATION, perform_fetch, policy_for

log = logging.getLogger("edgefn.runtime")


@dataclass(frozen=True)
class GuestModuleInfo:
    """Static facts about a v1 module, read from its types so the request path never looks them up."""

    export_names: tuple[str, ...]
    memory_export: int
    alloc_export: int
    handle_export: int
    init_export: int | None
    imports_wasi: bool
    memory_min_bytes: int


_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


def _functype(ty: object, params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> bool:
    return isinstance(ty, wasmtime.FuncType) and list(ty.params) == params and list(ty.results) == results


def inspect_module(module: wasmtime.Module, function: str) -> GuestModuleInfo:
    """Refuse a module that imports anything not granted or lacks a v1 export; describe the rest."""
    imports_wasi = False
    for imp in module.imports:
        if imp.module == abi.HOST_MODULE and imp.name in HOST_IMPORTS:
            expected = HOST_IMPORTS[imp.name]
            if not _functype(imp.type, *expected):
                raise ImportNotAllowed(function, imp.module, f"{imp.name} (with a type other than ABI v1's)")
            continue
        if imp.module == abi.WASI_MODULE and isinstance(imp.type, wasmtime.FuncType):
            imports_wasi = True
            continue
        raise ImportNotAllowed(function, imp.module, imp.name or "")

    names = [e.name for e in module.exports]
    versions = sorted(
        int(n[len(abi.VERSION_EXPORT_PREFIX) :])
        for n in names
        if n.startswith(abi.VERSION_EXPORT_PREFIX) and n[len(abi.VERSION_EXPORT_PREFIX) :].isdigit()
    )
    if abi.ABI_VERSION not in versions:
        if versions:
            raise AbiMismatch(function, versions, abi.ABI_VERSION)
        raise MissingExport(function, f"{abi.VERSION_EXPORT_PREFIX}{abi.ABI_VERSION}", "a function () -> ()")

    types = {e.name: e.type for e in module.exports}

    def index_of(name: str, ok: bool, expected: str) -> int:
        if name not in types or not ok:
            raise MissingExport(function, name, expected)
        return names.index(name)

    mem_ty = types.get("memory")
    memory_export = index_of("memory", isinstance(mem_ty, wasmtime.MemoryType) and not mem_ty.is_shared, "a non-shared memory")
    alloc_export = index_of(abi.ALLOC_EXPORT, _functype(types.get(abi.ALLOC_EXPORT), [_I32], [_I32]), "a function (i32) -> i32")
    handle_export = index_of(
        abi.HANDLE_EXPORT, _functype(types.get(abi.HANDLE_EXPORT), [_I32, _I32], [_I64]), "a function (i32, i32) -> i64"
    )
    init_export = None
    if abi.INIT_EXPORT in types:
        init_export = index_of(abi.INIT_EXPORT, _functype(types[abi.INIT_EXPORT], [], []), "a function () -> ()")
    assert isinstance(mem_ty, wasmtime.MemoryType)
    return GuestModuleInfo(
        export_names=tuple(names),
        memory_export=memory_export,
        alloc_export=alloc_export,
        handle_export=handle_export,
        init_export=init_export,
        imports_wasi=imports_wasi,
        memory_min_bytes=mem_ty.limits.min * 65536,
    )


# --- host functions ------------------------------------------------------------------------------------


def _read(caller: wasmtime.Caller, ptr: int, length: int) -> bytes | None:
    mem = caller.get("memory")
    if not isinstance(mem, wasmtime.Memory) or ptr < 0 or length < 0 or ptr + length > mem.data_len(caller):
        return None
    return bytes(mem.read(caller, ptr, ptr + length))


def _host_log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
    # host functions never raise: an exception would have to unwind through wasm (and wasmtime-py keeps
    # the pending exception in a process-global, which worker threads would race on)
    try:
        ctx = current_context()
        data = _read(caller, ptr & 0xFFFFFFFF, length & 0xFFFFFFFF)
        if data is None:
            ctx.note(2, f"log({ptr}, {length}) pointed outside guest memory; line dropped")
        else:
            ctx.write_log(level, data)
    except Exception:  # noqa: BLE001 - see above
        log.exception("edgefn:host/v1.log failed")


def _host_env_get(caller: wasmtime.Caller, key_ptr: int, key_len: int, buf_ptr: int, buf_cap: int) -> int:
    try:
        ctx = current_context()
        key = _read(caller, key_ptr & 0xFFFFFFFF, key_len & 0xFFFFFFFF)
        if key is None:
            return -2
        value = ctx.env.get(key.decode("utf-8", "replace"))
        if value is None:
            return -1
        return _copy_out(caller, value, buf_ptr, buf_cap)
    except Exception:  # noqa: BLE001 - host functions never raise
        log.exception("edgefn:host/v1.env_get failed")
        return -2


def _copy_out(caller: wasmtime.Caller, value: bytes, buf_ptr: int, buf_cap: int) -> int:
    """The env_get/fetch_result convention: copy only if it fits, always return the full length."""
    buf_ptr &= 0xFFFFFFFF
    if len(value) <= (buf_cap & 0xFFFFFFFF):
        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory) or buf_ptr + len(value) > mem.data_len(caller):
            return -2
        mem.write(caller, value, buf_ptr)
    return len(value)


def guest_fetch(request: bytes) -> bytes:
    """One fetch for the invocation on this thread (core modules and components alike): the CBOR outcome."""
    ctx = current_context()
    ctx.fetches += 1
    if ctx.fetches > MAX_FETCHES_PER_INVOCATION:
        doc, line = {"error": f"fetch refused: more than {MAX_FETCHES_PER_INVOCATION} fetches in one invocation"}, "fetch refused: too many"
    else:
        suspend, resume = ctx.io_gate or (_nothing, _nothing)
        suspend()
        try:
            doc, line = perform_fetch(request, policy_for(ctx.allowed_hosts), ctx.deadline)
        finally:
            resume()
    ctx.note(2 if "error" in doc else 1, line)
    return cbor2.dumps(doc)


def _nothing() -> None:
    pass


def _host_fetch(caller: wasmtime.Caller, req_ptr: int, req_len: int) -> int:
    try:
        request = _read(caller, req_ptr & 0xFFFFFFFF, req_len & 0xFFFFFFFF)
        if request is None:
            return -2
        ctx = current_context()
        ctx.pending_fetch = guest_fetch(request)
        return len(ctx.pending_fetch)
    except Exception:  # noqa: BLE001 - host functions never raise
        log.exception("edgefn:host/v1.fetch failed")
        return -2


def _host_fetch_result(caller: wasmtime.Caller, buf_ptr: int, buf_cap: int) -> int:
    try:
        pending = current_context().pending_fetch
        if pending is None:
            return -1
        return _copy_out(caller, pending, buf_ptr, buf_cap)
    except Exception:  # noqa: BLE001 - host functions never raise
        log.exception("edgefn:host/v1.fetch_result failed")
        return -2


HOST_IMPORTS: dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType]]] = {
    "log": ([_I32, _I32, _I32], []),
    "env_get": ([_I32, _I32, _I32, _I32], [_I32]),
    "fetch": ([_I32, _I32], [_I32]),
    "fetch_result": ([_I32, _I32], [_I32]),
}
_HOST_CALLBACKS: dict[str, Callable[..., Any]] = {"log": _host_log, "env_get": _host_env_get, "fetch": _host_fetch, "fetch_result": _host_fetch_result}


def create_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """The one Linker of an engine: ABI v1 host functions plus WASI preview1 (capabilities come per Store)."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    for name, (params, results) in HOST_IMPORTS.items():
        linker.define_func(abi.HOST_MODULE, name, wasmtime.FuncType(params, results), _HOST_CALLBACKS[name], access_caller=True)
    return linker
