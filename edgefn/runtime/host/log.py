"""log: a guest's own log lines, into its function's log stream (one record per call, escaped)."""

from __future__ import annotations

import logging

from wasmtime import component as wc

from ..context import current_context
from ..fastcall import GuestMemory
from .capability import HostCapability
from .guest_memory import I32, read

__all__ = ["CAPABILITY"]

_log = logging.getLogger("edgefn.runtime")
#: the component world's level names -> the core ABI's numbers (0 debug .. 3 error)
_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}


def _core_log(memory: GuestMemory | None, level: int, ptr: int, length: int) -> None:
    # exceptions: caught and logged by guest_memory.define_core_function (none may unwind through wasm)
    ctx = current_context()
    data = read(memory, ptr, length)
    if data is None:
        ctx.note(2, f"log({ptr}, {length}) pointed outside guest memory; line dropped")
    else:
        ctx.write_log(level, data)


def _component_log(_store: object, level: object, message: str) -> None:
    try:
        lvl = _LEVELS.get(level, 1) if isinstance(level, str) else int(level) if isinstance(level, int) else 1
        current_context().write_log(lvl, message.encode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - host functions never raise
        _log.exception("edgefn:function/host.log failed")


def _add(host: wc.LinkerInstance) -> None:
    host.add_func("log", _component_log)


CAPABILITY = HostCapability("log", {"log": ([I32, I32, I32], [], _core_log)}, _add)
