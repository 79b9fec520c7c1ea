"""env: the function's manifest environment (also WASI's environ), read by name."""

from __future__ import annotations

import logging

from wasmtime import component as wc

from ..context import current_context
from ..fastcall import GuestMemory
from .capability import HostCapability
from .guest_memory import I32, copy_out, read

__all__ = ["CAPABILITY"]

_log = logging.getLogger("edgefn.runtime")


def _core_env_get(memory: GuestMemory | None, key_ptr: int, key_len: int, buf_ptr: int, buf_cap: int) -> int:
    # an exception is caught, logged and answered -2 by guest_memory.define_core_function, as for every core host call
    key = read(memory, key_ptr, key_len)
    if key is None:
        return -2
    value = current_context().env.get(key.decode("utf-8", "replace"))
    if value is None:
        return -1
    return copy_out(memory, value, buf_ptr, buf_cap)


def _component_env_get(_store: object, name: str) -> str | None:
    try:
        value = current_context().env.get(name)
        return None if value is None else value.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - host functions never raise
        _log.exception("edgefn:function/host.env-get failed")
        return None


def _add(host: wc.LinkerInstance) -> None:
    host.add_func("env-get", _component_env_get)


CAPABILITY = HostCapability("env", {"env_get": ([I32, I32, I32, I32], [I32], _core_env_get)}, _add)
