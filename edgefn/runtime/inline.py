"""Which invocations run on the event loop's own thread, and for how long at most.

A hop to a guest thread and back costs more CPU than a short guest's whole run (docs/performance.md): the
future, the GIL hand-offs between the loop and the thread on a shared core, the wake-up. So a short run is
tried inline first, under a *slice*: at most `slice_fuel` instructions and `slice_ms` of wall clock, however
large the function's own limits are. Only functions measured short are tried: a run on a guest thread
that used at most half the slice's fuel marks its function short, a longer one unmarks it. Fuel, not wall
time: a thread's run is slowed by waiting for the GIL while the loop is busy, and a rule on its duration
would send a busy node's functions to the threads, where they wait longer still. A try that ends within
the slice is the invocation. A try that hits the slice (and not its own, smaller, limit) is thrown away
unseen — no log line, no REPORT, no metric, its instance dropped — and the invocation runs again on a guest
thread with the function's full limits; the function then stays on the threads for `cooldown_s`, so a
guest that turns long (or hostile) costs the loop at most one slice per cooldown. Only code that cannot
wait inside the host is tried: core modules without the fetch grant and without a WASI import that blocks
(`GuestModuleInfo.waits`). A thrown-away try had no effect outside its own instance, so the run again is
the same invocation.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from ..core.app import FunctionSpec, Limits
from ..core.exceptions import CpuBudgetExhausted, InvocationError, WallClockTimeout

__all__ = ["InlinePolicy"]

#: ~1 ms of wasm on this class of machine: what one request may hold the loop for at most, per cooldown
SLICE_FUEL = 2_000_000
SLICE_MS = 10
COOLDOWN_S = 10.0


class InlinePolicy:
    """The inline rule of one process (see the module docstring); `slice_fuel = 0` turns it off."""

    def __init__(self, slice_fuel: int = SLICE_FUEL, slice_ms: int = SLICE_MS, cooldown_s: float = COOLDOWN_S) -> None:
        self.slice_fuel = slice_fuel
        self.slice_ms = slice_ms
        self.cooldown_s = cooldown_s
        #: function -> the digest whose runs were measured short (its code may run inline)
        self._short: dict[str, str] = {}
        #: function -> monotonic time until which it runs on threads only (after a missed try)
        self._long_until: dict[str, float] = {}
        #: a function's limits -> those of its inline tries (few distinct limits per app; made once each)
        self._sliced: dict[Limits, Limits] = {}
        self._lock = threading.Lock()
        self.inline_runs = 0
        self.slice_misses = 0

    def admits(self, fn: FunctionSpec) -> bool:
        """Try `fn` inline now? (Its code must have been seen to be short-run code. One that may fetch or use the
        key-value store never is: the loop would wait on I/O, and a missed try run again would repeat a write.)"""
        if self.slice_fuel <= 0 or fn.allowed_hosts or fn.kv_namespaces or self._short.get(fn.name) != fn.digest:
            return False
        until = self._long_until.get(fn.name)
        return until is None or time.monotonic() >= until

    def learn(self, fn: FunctionSpec, code_ok: bool, fuel_used: int) -> None:
        """A run on a guest thread: code that never waits and used at most half the slice's fuel marks `fn` short."""
        if code_ok and fuel_used * 2 <= self.slice_fuel:
            self._short[fn.name] = fn.digest
        else:
            self._short.pop(fn.name, None)

    def slice_of(self, limits: Limits) -> Limits:
        """The limits of an inline try: the function's own, capped at the slice."""
        capped = self._sliced.get(limits)
        if capped is None:
            capped = limits
            if limits.fuel > self.slice_fuel or limits.timeout_ms > self.slice_ms:
                capped = dataclasses.replace(limits, fuel=min(limits.fuel, self.slice_fuel), timeout_ms=min(limits.timeout_ms, self.slice_ms))
            self._sliced[limits] = capped
        return capped

    def missed(self, fn: FunctionSpec, tried: Limits, error: InvocationError | None) -> bool:
        """Did the try end on the slice rather than on the function's own limit? Then it runs on threads for a while."""
        over = (isinstance(error, CpuBudgetExhausted) and tried.fuel < fn.limits.fuel) or (
            isinstance(error, WallClockTimeout) and tried.timeout_ms < fn.limits.timeout_ms
        )
        with self._lock:
            if over:
                self.slice_misses += 1
                self._long_until[fn.name] = time.monotonic() + self.cooldown_s
            else:
                self.inline_runs += 1
        return over

    def snapshot(self) -> dict[str, int]:
        return {"inline_runs": self.inline_runs, "slice_misses": self.slice_misses, "slice_fuel": self.slice_fuel}
