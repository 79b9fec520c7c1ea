"""Warm execution contexts: bounded per-function pools of reusable instances (Lambda's execution-context reuse).

Isolation by default stays "a fresh instance per request". A function that sets `reuse_instances = true`
gets a pool: an invocation takes an idle instance if there is one (warm) or creates one (cold); after a
clean invocation the invoker gives it back, so module-level state and `init()` work survive between
requests, as in a Lambda execution environment. An instance that trapped, hit a limit or returned anything
but a good result is dropped, never reused. Fuel and the wall-clock deadline are reset per invocation; the
memory cap applies to the instance's whole life.

A pool keeps at most `max_idle` instances (the invoker's worker threads: no more can be busy at once in a
process); `prewarm = N` creates N of them at startup, like provisioned concurrency. Pools are per process.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Hashable

from .instance import GuestInstance

log = logging.getLogger("edgefn.runtime.pool")


class WarmPool:
    """Idle instances of one function (one digest, limits and env), most recently used first."""

    def __init__(self, key: Hashable, max_idle: int) -> None:
        self.key = key
        self.max_idle = max(1, max_idle)
        self._idle: deque[GuestInstance] = deque()
        self._lock = threading.Lock()
        self.closed = False
        # counters, for tests and /_edgefn/info-style introspection
        self.created = 0
        self.reused = 0
        self.discarded = 0

    def take(self) -> GuestInstance | None:
        with self._lock:
            if self._idle:
                self.reused += 1
                return self._idle.pop()
            self.created += 1
            return None

    def give(self, instance: GuestInstance) -> bool:
        """Keep `instance` for the next invocation; False (and it is dropped) if the pool is full or closed."""
        with self._lock:
            if self.closed or len(self._idle) >= self.max_idle:
                self.discarded += 1
                return False
            self._idle.append(instance)
            return True

    def discard(self) -> None:
        """Count an instance that failed and is dropped."""
        with self._lock:
            self.discarded += 1

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def drain(self) -> None:
        with self._lock:
            self.closed = True
            self._idle.clear()


class WarmPools:
    """The pools of one process, one per function name; a changed function (digest, limits, env) gets a new one."""

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self._pools: dict[str, WarmPool] = {}
        self._lock = threading.Lock()

    def pool_for(self, function: str, key: Hashable) -> WarmPool:
        with self._lock:
            pool = self._pools.get(function)
            if pool is not None and pool.key == key:
                return pool
            if pool is not None:
                pool.drain()  # the function was redeployed: its old instances run old code or old limits
            pool = self._pools[function] = WarmPool(key, self.max_idle)
            return pool

    def get(self, function: str) -> WarmPool | None:
        with self._lock:
            return self._pools.get(function)

    def prewarm(self, function: str, key: Hashable, count: int, make: Callable[[], GuestInstance]) -> int:
        """Create up to `count` instances (capped at the pool's bound) with `make`; returns how many are idle."""
        pool = self.pool_for(function, key)
        wanted = min(count, pool.max_idle)
        if count > pool.max_idle:
            log.warning("function %r: prewarm = %d, but at most %d instances can be busy at once; prewarming %d", function, count, pool.max_idle, wanted)
        while pool.idle() < wanted:
            instance = make()
            with pool._lock:
                pool.created += 1
            if not pool.give(instance):
                break
        return pool.idle()

    def idle_counts(self) -> dict[str, int]:
        """function -> idle (initialised, ready) instances in its pool."""
        with self._lock:
            pools = dict(self._pools)
        return {name: pool.idle() for name, pool in sorted(pools.items())}

    def retain(self, keep: set[str]) -> list[str]:
        """Drain and forget the pools not in `keep` (versions nothing routes to any more); returns their names."""
        with self._lock:
            gone = {name: pool for name, pool in self._pools.items() if name not in keep}
            for name in gone:
                del self._pools[name]
        for pool in gone.values():
            pool.drain()
        return sorted(gone)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.drain()
