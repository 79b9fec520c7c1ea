"""A core guest's Store, instance and calls, made in C (runtime/_native.c) with wasmtime's C API.

wasmtime-py's `Func.__call__` re-reads the function type and boxes every value on each call (~30 µs), and
even raw ctypes calls cost ~1 µs of argument boxing and a GIL hand-off each, ~20 of them per invocation.
_native makes the Store, instantiation and the alloc/handle calls in a handful of calls, with the GIL
released while wasm runs. With host/guest_memory.py this is where wasmtime-py's internals (`_ffi`) are
touched, so an upgrade has two places to check (and _native.c checks wasmtime's struct sizes at start).
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any, NamedTuple

import wasmtime
from wasmtime import _bindings as b
from wasmtime import _ffi as ffi

from . import _native

_ContextPtr = ctypes.POINTER(ffi.wasmtime_context_t)


def function_address(fn: object) -> int:
    """The C address of a ctypes function of wasmtime-py's bindings (what _native is bound to)."""
    return ctypes.cast(fn, ctypes.c_void_p).value or 0  # type: ignore[arg-type]  # a ctypes function object


_native.init(
    function_address(b._wasmtime_store_new), function_address(b._wasmtime_store_context), function_address(b._wasmtime_store_delete),
    function_address(b._wasmtime_store_limiter), function_address(b._wasmtime_context_set_fuel), function_address(b._wasmtime_context_get_fuel),
    function_address(b._wasmtime_context_set_epoch_deadline), function_address(b._wasmtime_instance_pre_instantiate),
    function_address(b._wasmtime_instance_export_nth), function_address(b._wasmtime_func_call), function_address(b._wasmtime_memory_data),
    function_address(b._wasmtime_memory_data_size), function_address(b._wasmtime_error_new), function_address(b._wasmtime_config_host_memory_creator_set),
    function_address(b._wasmtime_caller_export_get), function_address(b._wasmtime_caller_context),
    ctypes.sizeof(ffi.wasmtime_extern_t), ctypes.sizeof(ffi.wasmtime_val_t), ctypes.sizeof(ffi.wasmtime_instance_t), ctypes.sizeof(ffi.wasmtime_val_raw_t),
)

#: the address of env_get in C (host/env.py), once _native is bound
ENV_GET = _native.host_env_get()


def pack_env(env: dict[str, str]) -> bytes:
    """A function's env as the Store holds it for the env_get host function in _native.c: per entry the
    key's and the value's UTF-8 lengths (u32, little-endian), then the key, then the value."""
    out = bytearray()
    for key, value in env.items():
        k, v = key.encode(), value.encode()
        out += len(k).to_bytes(4, "little") + len(v).to_bytes(4, "little") + k + v
    return bytes(out)


def pointer_of(obj: Any) -> int:
    """The C address behind a wasmtime-py object (Engine, InstancePre, Config)."""
    return ctypes.cast(obj.ptr(), ctypes.c_void_p).value or 0


class GuestCallError(Exception):
    """A call ended in a trap or an engine error; `trap` is set for traps."""

    def __init__(self, trap: wasmtime.Trap | None, error: wasmtime.WasmtimeError | None) -> None:
        self.trap = trap
        self.error = error
        super().__init__(str(trap or error))

    @classmethod
    def of(cls, failure: tuple[int, int, int]) -> "GuestCallError":
        """From a _native failure (1, error pointer, trap pointer); takes ownership of both."""
        _, error, trap = failure
        if error:
            return cls(None, wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))))
        return cls(wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t))), None)


class CoreStore:
    """A core module's Store and its one instance, with the limits the sandbox sets, held in C.

    Every linear memory of the instance is charged to the Store's own budget of `linear_bytes`; a
    creation or growth past it is refused and recorded (memory.py). `env` (pack_env) is what the guest's
    env_get reads, in C."""

    __slots__ = ("_handle",)

    def __init__(
        self, engine: int, *, fuel: int, epoch_ticks: int, linear_bytes: int, table_elements: int, tables: int, memories: int, instances: int,
        env: bytes | None = None,
    ) -> None:
        self._handle = 0
        handle = _native.store_new(engine, fuel, epoch_ticks, linear_bytes, table_elements, tables, memories, instances, env)
        if isinstance(handle, tuple):
            raise GuestCallError.of(handle)
        self._handle = handle

    def _context(self) -> Any:
        return ctypes.cast(_native.context(self._handle), _ContextPtr)

    def set_wasi(self, wasi: wasmtime.WasiConfig) -> None:
        error = ffi.wasmtime_context_set_wasi(self._context(), wasi._consume())
        if error:
            raise GuestCallError(None, wasmtime.WasmtimeError._from_ptr(error))

    def instantiate(self, pre: int, memory_export: int, alloc_export: int, handle_export: int, init_export: int | None) -> None:
        failure = _native.instantiate(self._handle, pre, memory_export, alloc_export, handle_export, -1 if init_export is None else init_export)
        if failure is not None:
            raise GuestCallError.of(failure)

    def call_init(self) -> None:
        failure = _native.call_init(self._handle)
        if failure is not None:
            raise GuestCallError.of(failure)

    def invoke(self, event: bytes, max_result_bytes: int) -> bytes | tuple[int, int, int, int]:
        """edgefn_alloc, the event in, edgefn_handle, the result out: the bytes, or _native's (kind, ...)
        for a result the sandbox refuses. Raises GuestCallError for a trap."""
        out = _native.invoke(self._handle, event, max_result_bytes)
        if isinstance(out, tuple) and out[0] == 1:
            raise GuestCallError.of(out[:3])
        return out

    def rearm(self, fuel: int, epoch_ticks: int) -> None:
        failure = _native.rearm(self._handle, fuel, epoch_ticks)
        if failure is not None:
            raise GuestCallError.of(failure)

    def get_fuel(self) -> int:
        remaining = _native.fuel(self._handle)
        if isinstance(remaining, tuple):
            raise GuestCallError.of(remaining)
        return remaining

    def memory(self) -> tuple[int, int, int]:
        """(peak linear bytes, bytes asked for when refused, the budget when refused (0: never))."""
        return _native.memory(self._handle)

    def __del__(self) -> None:
        if self._handle:
            _native.store_delete(self._handle)
            self._handle = 0


class FreshRun(NamedTuple):
    """What `run_fresh` ended in: the invocation's value (as CoreStore.invoke returns it), or the failed step
    (`failure`; `instantiating` if it was the Store or the instantiation); the Store's fuel and memory either way."""

    value: bytes | tuple[int, int, int, int] | None
    failure: GuestCallError | None
    instantiating: bool
    fuel_left: int
    peak: int
    refused: tuple[int, int] | None


def run_fresh(
    engine: int, pre: int, exports: tuple[int, int, int], *, fuel: int, epoch_ticks: int, linear_bytes: int, table_elements: int,
    tables: int, memories: int, env: bytes | None, event: bytes, max_result_bytes: int,
) -> FreshRun:
    """A fresh Store with its limits, the instance, one invocation and the Store dropped, in one call into C:
    what CoreStore's steps do one by one, for a module with no `_initialize` and no WASI. `exports` are the
    memory, edgefn_alloc and edgefn_handle export indices."""
    stage, value, fuel_left, peak, asked, cap = _native.run_fresh(
        engine, fuel, epoch_ticks, linear_bytes, table_elements, tables, memories, 1, env, pre, *exports, event, max_result_bytes,
    )
    refused = (asked, cap) if cap else None
    if stage or (isinstance(value, tuple) and value[0] == 1):
        return FreshRun(None, GuestCallError.of(value[:3]), stage != 0, fuel_left, peak, refused)
    return FreshRun(value, None, False, fuel_left, peak, refused)


class GuestMemory:
    """Bounds-checked copies in and out of a linear memory: the sandbox's view of an instance's exported
    memory, and a host call's view of its caller's (host/guest_memory.py). The size and base are read on
    every copy: the guest may have grown (and so moved) the memory since the last one."""

    __slots__ = ("_ctx", "_mem")

    def __init__(self, context: Any, memory: ffi.wasmtime_memory_t) -> None:
        self._ctx = context
        self._mem = memory

    def size(self) -> int:
        return ffi.wasmtime_memory_data_size(self._ctx, byref(self._mem))

    def _span(self, offset: int, length: int) -> int | None:
        """The host address of [offset, offset+length), or None if it is not all inside the memory."""
        mem = byref(self._mem)
        if offset + length > ffi.wasmtime_memory_data_size(self._ctx, mem):
            return None
        return (ctypes.cast(ffi.wasmtime_memory_data(self._ctx, mem), ctypes.c_void_p).value or 0) + offset

    def write(self, offset: int, data: bytes) -> bool:
        at = self._span(offset, len(data))
        if at is None:
            return False
        ctypes.memmove(at, data, len(data))
        return True

    def read(self, offset: int, length: int) -> bytes | None:
        at = self._span(offset, length)
        return None if at is None else ctypes.string_at(at, length)

