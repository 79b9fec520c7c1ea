"""Linear memory that counts against one budget per Store: how `memory_mb` caps every memory a guest makes.

wasmtime's store limiter caps each memory on its own (`memory_size` is per memory), so a module with 40
unexported memories, or a component with several, could take 40 times its cap; and a refused
`memory.grow` just returns -1, leaving the host to guess whether a later trap was the cap. So edgefn
allocates linear memory itself (wasmtime's host memory creator, `wasmtime_config_host_memory_creator_set`,
implemented in runtime/_native.c, so that no allocation calls back into Python):
each core Store gets a budget of `memory_mb`, every memory it creates or grows is charged to it,
and a creation or growth past it is refused and recorded. The budget then gives REPORT's `Max Memory
Used` (all memories, exported or not) and decides `MemoryLimitExceeded` from what was refused, with no
heuristic.

Each memory is one mmap reservation (the reservation plus guard region wasmtime asks for, PROT_NONE) of
which the accessible prefix is made read-write as it grows, which is what wasmtime's own allocator
does; the engine's bounds-check elision relies on that guard region, which stays inaccessible. A freed
reservation is kept for the next memory of the same shape, made to read as zero (the few pages a small
guest touched are zeroed in place and stay resident; many are discarded with MADV_DONTNEED) and its
accessible prefix set to the new memory's size: mapping and unmapping several GiB per request cost a third
of a small invocation's CPU, and faulting the touched pages in again another few µs.
"""

from __future__ import annotations

from . import _native
from .fastcall import pointer_of


def install(config: object) -> None:
    """Make every memory of engines built from `config` (a wasmtime.Config) come from runtime/_native.c,
    charged to the budget of the Store being instantiated (fastcall.CoreStore)."""
    _native.install_memory_creator(pointer_of(config))


__all__ = ["install"]
