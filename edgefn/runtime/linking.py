"""What a guest may import, and the checks that a module speaks ABI v1 (done once, at load)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import wasmtime

from ..core.exceptions import AbiMismatch, ImportNotAllowed, MissingExport
from . import abi
from .host import CORE_IMPORTS

log = logging.getLogger("edgefn.runtime")

#: host calls that can block the calling thread (runtime/inline.py keeps such guests off the event loop)
WAITING_IMPORTS = {
    (abi.HOST_MODULE, "fetch"),
    *((abi.WASI_MODULE, name) for name in ("poll_oneoff", "fd_read", "fd_pread", "sock_accept", "sock_recv", "sock_send", "sock_shutdown")),
}


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
    #: it imports something that can wait inside the host (a fetch, a WASI sleep or read): never run inline
    waits: bool = False
    #: how its event and result are encoded (abi.encode_event, abi.decode_result): a core module's are CBOR
    encoding: abi.DocumentEncoding = "cbor"


_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


def _functype(ty: object, params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> bool:
    return isinstance(ty, wasmtime.FuncType) and list(ty.params) == params and list(ty.results) == results


def check_imports(imports: list[tuple[str, str]], function: str) -> None:
    """Refuse a module importing anything not granted, naming every such import (by name: before any compile)."""
    refused = [(m, n) for m, n in imports if not ((m == abi.HOST_MODULE and n in CORE_IMPORTS) or m == abi.WASI_MODULE)]
    if refused:
        raise ImportNotAllowed(function, *refused[0], more=tuple(f"{m}.{n}" for m, n in refused[1:]))


def inspect_module(module: wasmtime.Module, function: str) -> GuestModuleInfo:
    """Refuse a module that imports anything not granted or lacks a v1 export; describe the rest."""
    imports_wasi = False
    waits = False
    check_imports([(imp.module, imp.name or "") for imp in module.imports], function)
    for imp in module.imports:
        waits = waits or (imp.module, imp.name) in WAITING_IMPORTS
        if imp.module == abi.HOST_MODULE and imp.name in CORE_IMPORTS:
            expected = CORE_IMPORTS[imp.name]
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
        waits=waits,
    )
