"""env: the function's manifest environment (also WASI's environ), read by name.

A core guest's env_get is C (runtime/_native.c, reading the Store's `fastcall.pack_env` copy): it is the
one host call nearly every function makes on every request, and in C it needs neither the GIL nor Python.
"""

from __future__ import annotations

import logging

from wasmtime import component as wc

from ..context import current_context
from ..fastcall import ENV_GET
from .capability import HostCapability, NativeHostFunction
from .guest_memory import I32

__all__ = ["CAPABILITY"]

_log = logging.getLogger("edgefn.runtime")


def _component_env_get(_store: object, name: str) -> str | None:
    try:
        value = current_context().env.get(name)
        return None if value is None else value.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - host functions never raise
        _log.exception("edgefn:function/host.env-get failed")
        return None


def _add(host: wc.LinkerInstance) -> None:
    host.add_func("env-get", _component_env_get)


CAPABILITY = HostCapability("env", {"env_get": ([I32, I32, I32, I32], [I32], NativeHostFunction(ENV_GET))}, _add)
