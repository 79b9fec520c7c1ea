"""Host capabilities: what a guest may call, one file each (log.py, env.py, fetch.py, kv.py; scratch.py: /tmp).

Each capability declares both of its faces together: the functions of the core-module ABI
(`edgefn:host/v1`, guest-sdk/ABI.md) and the functions of the component world (`edgefn:function/host`).
This package folds the list into the two linkers and the "granted imports" the load-time checks use, so a
new capability is one more file here and one more entry in CAPABILITIES (plus its SDK wrappers).
"""

from __future__ import annotations

import wasmtime
from wasmtime import component as wc

from .. import abi
from . import env, fetch, kv, log, scratch
from .capability import COMPONENT_INTERFACE, HostCapability
from .guest_memory import define_core_function

__all__ = ["CAPABILITIES", "COMPONENT_INTERFACE", "CORE_IMPORTS", "HostCapability", "create_component_linker", "create_linker", "env", "fetch", "kv", "log", "scratch"]

#: every capability a guest can be granted, in one list
CAPABILITIES: tuple[HostCapability, ...] = (log.CAPABILITY, env.CAPABILITY, fetch.CAPABILITY, kv.CAPABILITY)

#: name -> (params, results) of every function edgefn:host/v1 grants (runtime/linking.py checks imports against it)
CORE_IMPORTS: dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType]]] = {
    name: (params, results) for cap in CAPABILITIES for name, (params, results, _) in cap.core.items()
}


def create_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """The one core Linker of an engine: every capability's edgefn:host/v1 functions plus WASI preview1
    (what a Store may do is set per Store)."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    scratch.shadow_wasi_growth(linker, engine)  # /tmp's size cap
    for cap in CAPABILITIES:
        for name, (params, results, callback) in cap.core.items():
            define_core_function(linker, abi.HOST_MODULE, name, params, results, callback)
    return linker


def create_component_linker(engine: wasmtime.Engine) -> wc.Linker:
    """The one component Linker of an engine: every capability's edgefn:function/host functions plus WASI 0.2."""
    linker = wc.Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        with root.add_instance(COMPONENT_INTERFACE) as host:
            for cap in CAPABILITIES:
                if cap.add_component_functions is not None:
                    cap.add_component_functions(host)
    return linker
