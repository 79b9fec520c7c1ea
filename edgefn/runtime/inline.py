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
guest that turns long (or hostile) costs the loop at most one slice per cooldown. Nothing with the fetch
grant or a key-value store is tried. A core module is tried only if it has no WASI import that blocks
(`GuestModuleInfo.waits`). A component is tried only warm (an idle pooled instance: its creation takes
milliseconds), and its WASI can sleep inside the host, where neither fuel nor the epoch reach: a try
whose thread was blocked (gave up the CPU: a sleep, a wait in the host) for longer than the slice's wall
clock, whatever its outcome, is a miss, and each such miss of a function doubles its cooldown (up to
`MAX_COOLDOWN_S`), so a guest that sleeps stalls the loop a few times, then runs on the threads. Time the
thread computed (a garbage collection) or waited to be scheduled again (another process on a busy core)
is not the guest's wait: on a shared core one such stall sent a component to the threads for minutes. A
thrown-away try had no effect outside its own instance, so the run again is the same invocation.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
from typing import TYPE_CHECKING, Callable

from ..core.app import FunctionSpec, Limits
from ..core.exceptions import CpuBudgetExhausted, InvocationError, WallClockTimeout
from ..core.report import InvocationReport
from .linking import GuestModuleInfo

if TYPE_CHECKING:
    from .component import ComponentInfo

__all__ = ["InlinePolicy", "blocked_ms", "blocking_mark"]

#: ~1 ms of wasm on this class of machine: what one request may hold the loop for at most, per cooldown
SLICE_FUEL = 2_000_000
SLICE_MS = 10
COOLDOWN_S = 10.0
#: the longest a component that overran the slice's wall clock (it waited in the host) stays on the threads
MAX_COOLDOWN_S = 640.0


#: per thread: its /proc/thread-self/schedstat, open (closed with the thread), or None where there is none
_schedstat = threading.local()


def _schedstat_of_this_thread() -> io.FileIO | None:
    try:
        return _schedstat.file  # type: ignore[no-any-return]
    except AttributeError:
        try:
            _schedstat.file = io.FileIO("/proc/thread-self/schedstat", "r")
        except OSError:  # not Linux, or no schedstats: a try's whole wall time counts as blocked
            _schedstat.file = None
        return _schedstat.file  # type: ignore[no-any-return]


def blocking_mark() -> int:
    """Now, for `blocked_ms` (ns): the wall clock, less this thread's time on a CPU and waiting for one."""
    now = time.perf_counter_ns()
    stat = _schedstat_of_this_thread()
    if stat is not None:
        # its CPU time there lags a running thread by under a scheduler tick (4 ms at HZ=250): well inside the
        # slice, and one read instead of two clocks (the thread's CPU clock is a syscall of its own)
        on_cpu, waiting, _ = os.pread(stat.fileno(), 64, 0).split()
        now -= int(on_cpu) + int(waiting)
    return now


def blocked_ms(mark: int) -> float:
    """How long since `mark` this thread was blocked (asleep: a sleep, a wait in the host), not running or
    waiting to run (a garbage collection; another process on a busy core). Where the OS does not say, the
    whole wall time."""
    return max(0, blocking_mark() - mark) / 1e6


class InlinePolicy:
    """The inline rule of one process (see the module docstring); `slice_fuel = 0` turns it off."""

    def __init__(self, slice_fuel: int = SLICE_FUEL, slice_ms: int = SLICE_MS, cooldown_s: float = COOLDOWN_S) -> None:
        self.slice_fuel = slice_fuel
        self.slice_ms = slice_ms
        self.cooldown_s = cooldown_s
        #: function -> (the digest whose runs were measured short, whether it is a component: tried only warm)
        self._short: dict[str, tuple[str, bool]] = {}
        #: function -> the cooldown its component's last wait in the host earned (doubles with each)
        self._waits: dict[str, float] = {}
        #: function -> monotonic time until which it runs on threads only (after a missed try)
        self._long_until: dict[str, float] = {}
        #: a function's limits -> those of its inline tries (few distinct limits per app; made once each)
        self._sliced: dict[Limits, Limits] = {}
        self._lock = threading.Lock()
        self.inline_runs = 0
        self.slice_misses = 0

    def admits(self, fn: FunctionSpec, warm_idle: Callable[[], bool]) -> bool:
        """Try `fn` inline now? (Its code must have been seen to be short-run code. One that may fetch or use the
        key-value store never is: the loop would wait on I/O, and a missed try run again would repeat a write.
        A component only when `warm_idle()`: one of its pooled instances is idle.)"""
        if self.slice_fuel <= 0 or fn.allowed_hosts or fn.kv_namespaces:
            return False
        mark = self._short.get(fn.name)
        if mark is None or mark[0] != fn.digest:
            return False
        until = self._long_until.get(fn.name)
        if until is not None and time.monotonic() < until:
            return False
        return not mark[1] or warm_idle()

    def learn(self, fn: FunctionSpec, info: GuestModuleInfo | ComponentInfo, report: InvocationReport) -> None:
        """A run on a guest thread: code that cannot block in the host (a core module without a waiting import,
        or a warm component) and used at most half the slice's fuel marks `fn` short."""
        if isinstance(info, GuestModuleInfo):
            component, can_run = False, not info.waits
        else:
            component, can_run = True, report.warm
        if can_run and report.fuel_used * 2 <= self.slice_fuel:
            self._short[fn.name] = (fn.digest, component)
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

    def missed(self, fn: FunctionSpec, tried: Limits, error: InvocationError | None, blocked_ms: float) -> bool:
        """Did the try end on the slice rather than on the function's own limit? Then it runs on threads for a
        while, and runs again there now. A component's try whose thread was blocked (`blocked_ms`) past the slice's
        wall clock waited in the host: its function's cooldown doubles, and an outcome it reached within the
        slice's fuel stands."""
        over = (isinstance(error, CpuBudgetExhausted) and tried.fuel < fn.limits.fuel) or (
            isinstance(error, WallClockTimeout) and tried.timeout_ms < fn.limits.timeout_ms
        )
        mark = self._short.get(fn.name)
        waited = mark is not None and mark[1] and blocked_ms > self.slice_ms
        with self._lock:
            if over or waited:
                self.slice_misses += 1
                cooldown = self.cooldown_s
                if waited:  # the first wait earns the plain cooldown, each later one twice the last
                    last = self._waits.get(fn.name)
                    cooldown = self._waits[fn.name] = self.cooldown_s if last is None else min(last * 2, MAX_COOLDOWN_S)
                self._long_until[fn.name] = time.monotonic() + cooldown
            if not over:
                self.inline_runs += 1
        return over

    def cooldown_left(self, name: str) -> float:
        """Seconds function `name` still runs on the threads only (0: it may be tried inline)."""
        until = self._long_until.get(name)
        return max(0.0, until - time.monotonic()) if until is not None else 0.0

    def snapshot(self) -> dict[str, int]:
        return {"inline_runs": self.inline_runs, "slice_misses": self.slice_misses, "slice_fuel": self.slice_fuel}
