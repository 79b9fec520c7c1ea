"""Reading and writing a core guest's exported memory from a host function (the Caller's view)."""

from __future__ import annotations

import wasmtime

__all__ = ["copy_out", "read"]

I32 = wasmtime.ValType.i32()


def read(caller: wasmtime.Caller, ptr: int, length: int) -> bytes | None:
    """`length` bytes at `ptr` (both taken as u32), or None if they are not all inside the memory."""
    ptr &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    mem = caller.get("memory")
    if not isinstance(mem, wasmtime.Memory) or ptr + length > mem.data_len(caller):
        return None
    return bytes(mem.read(caller, ptr, ptr + length))


def copy_out(caller: wasmtime.Caller, value: bytes, buf_ptr: int, buf_cap: int) -> int:
    """The env_get/fetch_result convention: copy only if it fits, always return the full length (-2: bad buffer)."""
    buf_ptr &= 0xFFFFFFFF
    if len(value) <= (buf_cap & 0xFFFFFFFF):
        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory) or buf_ptr + len(value) > mem.data_len(caller):
            return -2
        mem.write(caller, value, buf_ptr)
    return len(value)
