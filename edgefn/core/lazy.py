"""A value made on first use: an outbound HTTP client most apps never need costs a server's start nothing.

Importing httpx (and cryptography, for TLS) was ~70 ms of a server's ~480 ms of imports; an app whose origins
are its functions, with no HTTP destination and no fetch grant, never needs either (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Lazy"]

T = TypeVar("T")


class Lazy(Generic[T]):
    """`get()` makes the value with `make` the first time (once, whichever thread asks first)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def peek(self) -> T | None:
        """The value if it was made, else None (what a close needs: nothing to close if it never was)."""
        return self._value
