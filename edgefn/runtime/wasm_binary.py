"""What a wasm binary says about itself, read from its bytes without compiling it (milliseconds, not seconds).

The module store reads three facts here before it hands a binary to wasmtime: its kind (core module or
component), what it imports (so a guest importing something not granted is refused before a compile that
can take a minute), and its linear memories (how many, how big at start, and which of them can ever grow,
so that the memory cap holds over all of a component's memories together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

__all__ = ["MemoryLayout", "component_imports", "core_imports", "is_component", "memory_layout", "memory_min_bytes"]

PAGE = 65536
_MEMORY_GROW = 0x40  # memory.grow's opcode; the same byte is also an empty block type, so a scan over-counts


def is_component(head: bytes) -> bool:
    """True for a component binary: `\\0asm`, then a version whose layer field (bytes 6-7) is 1."""
    return len(head) >= 8 and head[:4] == b"\0asm" and head[6:8] == b"\x01\x00"


def leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 at `pos`: (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def sections(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(section id, content start, content end) of each section between `start` and `end`."""
    pos = start
    while pos < end:
        sid = data[pos]
        size, pos = leb(data, pos + 1)
        if pos + size > end:
            raise ValueError(f"section {sid} runs past the end of the binary")
        yield sid, pos, pos + size
        pos += size


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = leb(data, pos)
    return data[pos : pos + size].decode("utf-8", "replace"), pos + size


def _limits(data: bytes, pos: int) -> tuple[int, int]:
    """A memory's or table's limits: (minimum, position after them)."""
    flags = data[pos]
    minimum, pos = leb(data, pos + 1)
    if flags & 0x01:
        _, pos = leb(data, pos)
    if flags & 0x08:  # custom page size: log2 of it
        _, pos = leb(data, pos)
    return minimum, pos


def _heap_or_val_type(data: bytes, pos: int) -> int:
    kind = data[pos]
    if kind in (0x63, 0x64):  # (ref null? heaptype): a heap type follows, as a signed LEB
        _, pos = leb(data, pos + 1)
        return pos
    return pos + 1


# --- core modules ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CoreModule:
    imports: tuple[tuple[str, str, int], ...]  # (module, name, kind: 0 func, 1 table, 2 memory, 3 global, 4 tag)
    memories: tuple[int, ...]  # the initial size of each memory it defines, in bytes
    may_grow: bool  # its code may hold memory.grow (False only when no byte of its code could be one)


def _core_module(data: bytes, start: int, end: int) -> _CoreModule:
    imports: list[tuple[str, str, int]] = []
    memories: list[int] = []
    may_grow = False
    for sid, lo, hi in sections(data, start + 8, end):
        if sid == 2:
            count, pos = leb(data, lo)
            for _ in range(count):
                module, pos = _name(data, pos)
                name, pos = _name(data, pos)
                kind = data[pos]
                pos += 1
                if kind == 0x00:
                    _, pos = leb(data, pos)
                elif kind == 0x01:
                    pos = _heap_or_val_type(data, pos)
                    _, pos = _limits(data, pos)
                elif kind == 0x02:
                    _, pos = _limits(data, pos)
                elif kind == 0x03:
                    pos = _heap_or_val_type(data, pos) + 1
                elif kind == 0x04:
                    _, pos = leb(data, pos + 1)
                else:
                    raise ValueError(f"unknown import kind 0x{kind:02x}")
                imports.append((module, name, kind))
        elif sid == 5:
            count, pos = leb(data, lo)
            for _ in range(count):
                minimum, pos = _limits(data, pos)
                memories.append(minimum * PAGE)
        elif sid == 10:
            may_grow = data.find(bytes((_MEMORY_GROW,)), lo, hi) >= 0
    return _CoreModule(tuple(imports), tuple(memories), may_grow)


def core_imports(wasm: bytes) -> list[tuple[str, str]]:
    """(module, name) of each import of a core module."""
    return [(module, name) for module, name, _ in _core_module(wasm, 0, len(wasm)).imports]


# --- components ----------------------------------------------------------------------------------------------


def _externdesc(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    if kind == 0x00:  # core module: 0x11 then a type index
        _, pos = leb(data, pos + 1)
    elif kind in (0x01, 0x04, 0x05):  # func, component, instance: a type index
        _, pos = leb(data, pos)
    elif kind in (0x02, 0x03):  # value or type bound: a tag, then (except a sub-resource bound) an index or value type
        tag = data[pos]
        pos += 1
        if not (kind == 0x03 and tag == 0x01):
            _, pos = leb(data, pos)
    else:
        raise ValueError(f"unknown extern kind 0x{kind:02x}")
    return pos


def component_imports(wasm: bytes) -> list[str]:
    """The names a component imports at its top level (`wasi:http/types@0.2.3`, `edgefn:function/host@1.0.0`)."""
    names: list[str] = []
    for sid, lo, _ in sections(wasm, 8, len(wasm)):
        if sid != 10:
            continue
        count, pos = leb(wasm, lo)
        for _ in range(count):
            tag = wasm[pos]
            if tag not in (0x00, 0x01):
                raise ValueError(f"unknown import name tag 0x{tag:02x}")
            name, pos = _name(wasm, pos + 1)
            pos = _externdesc(wasm, pos)
            names.append(name)
    return names


@dataclass(frozen=True)
class MemoryLayout:
    """A binary's linear memories: each is capped on its own by wasmtime's store limiter, so the cap over all of
    them together is shared out here. A memory is *fixed* when no code that can reach it can grow it (a
    JS component's leftover build-time shim has one); fixed memories keep their initial size for good."""

    #: the largest initial size of any memory, in bytes
    largest_min_bytes: int
    #: how many memories the binary defines
    count: int
    #: how many of them may grow
    growable: int
    #: the initial bytes of the fixed ones, together
    fixed_bytes: int

    def per_memory_bytes(self, cap: int) -> int:
        """The limit for each memory such that all of them together stay within `cap` bytes."""
        return max(0, cap - self.fixed_bytes) // max(1, self.growable)


def _scope_memories(data: bytes, start: int, end: int) -> list[tuple[int, bool]]:
    """(initial bytes, may grow) of every memory defined in the component (or core module) at `start`."""
    if data[start : start + 4] != b"\0asm":
        raise ValueError("not a wasm binary")
    if not is_component(data[start : start + 8]):
        module = _core_module(data, start, end)
        return [(size, module.may_grow) for size in module.memories]
    found: list[tuple[int, bool]] = []
    modules: list[_CoreModule] = []
    for sid, lo, hi in sections(data, start + 8, end):
        if sid == 1:
            modules.append(_core_module(data, lo, hi))
        elif sid == 4:
            found += _scope_memories(data, lo, hi)
    # core instances of one component can share memories through their exports: a growing module that
    # imports a memory may be given any memory of its component
    growing_importer = any(m.may_grow and any(kind == 0x02 for _, _, kind in m.imports) for m in modules)
    for module in modules:
        found += [(size, module.may_grow or growing_importer) for size in module.memories]
    return found


def memory_layout(wasm: bytes) -> MemoryLayout:
    memories = _scope_memories(wasm, 0, len(wasm))
    return MemoryLayout(
        largest_min_bytes=max((size for size, _ in memories), default=0),
        count=len(memories),
        growable=sum(1 for _, grows in memories if grows),
        fixed_bytes=sum(size for size, grows in memories if not grows),
    )


def memory_min_bytes(wasm: bytes) -> int:
    """The largest initial size of any memory a component (or core module) defines, from its binary."""
    return memory_layout(wasm).largest_min_bytes
