"""What a host capability is: its core-ABI functions and its component functions, declared together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import wasmtime
from wasmtime import component as wc

__all__ = ["COMPONENT_INTERFACE", "HostCapability", "NativeHostFunction"]

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


