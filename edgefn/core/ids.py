"""Request ids without a syscall per request: a random per-process prefix and a counter, in UUID form.

`uuid.uuid4()` reads the OS random source on every call (a syscall that also releases the GIL); a request id
only has to be unique, not unpredictable. The prefix is 74 random bits drawn once per process (and again in a
forked child), the last 48 bits count, so ids from every process of a fleet stay distinct.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["new_request_id"]


def _prefix() -> str:
    r = os.urandom(10).hex()  # 20 hex digits, 19 used
    # version 4 and the RFC 4122 variant, so the id reads as the random UUID it stands in for
    return f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{'89ab'[int(r[15], 16) & 3]}{r[16:19]}-"


def _reset() -> None:
    global _PREFIX, _COUNTER
    _PREFIX = _prefix()
    _COUNTER = itertools.count(int.from_bytes(os.urandom(2), "big") << 16)


_PREFIX = ""
_COUNTER = itertools.count()
_reset()
os.register_at_fork(after_in_child=_reset)


def new_request_id() -> str:
    """A fresh id, e.g. `3f2a9c1e-7b4d-4e0a-9c51-00000000002a` (next() on a count is atomic under the GIL)."""
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFFFFFF:012x}"
