"""CPU slots for guests: at most `slots` guests run wasm at once, shared fairly between functions.

Threads are not the unit of CPU: an invocation waiting on the network (the fetch host call) gives its slot
back and takes one again before it returns to wasm, so slow fetches never starve other functions. When
the node serves more than one function, none may hold more than all but one of the slots, so a function
that burns its whole budget on every call cannot keep a healthy one waiting for a slot (an app of one
function has no one to protect and gets them all); when a slot frees, it goes first to an invocation
coming back from a fetch, then to the waiting function that has used the least slot time for its weight
(ties: the one that waited longest). A function's weight is its memory against 128 MB (Limits.cpu_weight),
so under contention a 256 MB function gets twice the guest CPU of a 128 MB one, as Lambda's CPU follows
memory; a function that comes back after being idle (no slot held or asked for in IDLE_AFTER_S) starts
level with the least-served active one rather than with the credit of its idle time. A gap shorter than
that is a thread between two calls (on a busy core, waiting for the GIL), not idleness.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

#: a function with no slot held or asked for this long is idle: its earlier credit is not kept
IDLE_AFTER_S = 1.0


@dataclass(eq=False)
class _Waiter:
    function: str
    seq: int
    #: set for an event-loop waiter; a thread waiter waits on `event`
    future: "asyncio.Future[None] | None" = None
    loop: asyncio.AbstractEventLoop | None = None
    event: threading.Event = field(default_factory=threading.Event)


class GuestScheduler:
    """Admission of guest runs to `slots` CPU slots (see the module docstring)."""

    def __init__(self, slots: int, functions: int = 2) -> None:
        self.slots = max(1, slots)
        #: the most slots one function may hold at once (see serving)
        self.share = self.slots if functions <= 1 else max(1, self.slots - 1)
        self._free = self.slots
        self._running: dict[str, int] = {}
        self._waiting: deque[_Waiter] = deque()
        self._resuming: deque[_Waiter] = deque()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        #: slot-seconds each function has held, divided by its weight, and the weights last given
        self._usage: dict[str, float] = {}
        self._weight: dict[str, float] = {}
        #: when each function last gave a slot back
        self._released: dict[str, float] = {}
        self._since = time.perf_counter()

    def serving(self, functions: int) -> None:
        """How many functions the node serves: with two or more, each may hold all slots but one."""
        with self._lock:
            self.share = self.slots if functions <= 1 else max(1, self.slots - 1)
            self._grant()

    # --- admission -------------------------------------------------------------------------------

    async def acquire(self, function: str, weight: float = 1.0) -> None:
        """Wait (on the event loop) for a slot for `function`, whose CPU share is `weight`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._weigh(function, weight)
            if self._can_run(function):
                self._take(function)
                return
            waiter = _Waiter(function, next(self._seq), loop.create_future(), loop)
            self._enqueue(waiter)
        assert waiter.future is not None
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                    raise
            # granted while being cancelled: the slot is ours, give it back
            self.release(function)
            raise

    def acquire_blocking(self, function: str, weight: float = 1.0) -> None:
        """Wait (on this thread) for a slot: CLI and benchmark invocations."""
        with self._lock:
            self._weigh(function, weight)
            if self._can_run(function):
                self._take(function)
                return
            waiter = _Waiter(function, next(self._seq))
            self._enqueue(waiter)
        waiter.event.wait()

    def release(self, function: str) -> None:
        with self._lock:
            self._advance()
            self._released[function] = self._since
            self._running[function] -= 1
            if not self._running[function]:
                del self._running[function]
            self._free += 1
            self._grant()

    # --- a run that waits on the network ----------------------------------------------------------

    def suspend(self, function: str) -> None:
        """The calling guest thread waits on I/O: its slot goes to someone else meanwhile."""
        self.release(function)

    def resume(self, function: str) -> None:
        """Back from I/O: wait for a slot before running wasm again (ahead of new admissions)."""
        with self._lock:
            if self._free > 0 and self._running.get(function, 0) < self.share:
                self._take(function)
                return
            waiter = _Waiter(function, next(self._seq))
            self._resuming.append(waiter)
        waiter.event.wait()

    # --- state -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "slots": self.slots, "share": self.share, "running": dict(self._running), "waiting": len(self._waiting) + len(self._resuming),
                "weights": {f: w for f, w in self._weight.items() if w != 1.0},
            }

    def _can_run(self, function: str) -> bool:
        return self._free > 0 and not self._resuming and self._running.get(function, 0) < self.share and not any(
            w.function == function for w in self._waiting
        )

    def _weigh(self, function: str, weight: float) -> None:
        if self._weight.get(function) != weight:
            self._advance()  # the time run so far counts at the old weight
            self._weight[function] = max(weight, 1e-3)

    def _advance(self) -> None:
        """Charge the slot time since the last change to the functions holding slots (lock held)."""
        now = time.perf_counter()
        elapsed, self._since = now - self._since, now
        for function, held in self._running.items():
            self._usage[function] = self._usage.get(function, 0.0) + held * elapsed / self._weight.get(function, 1.0)

    def _enqueue(self, waiter: _Waiter) -> None:
        """Queue a waiter; a function that was idle starts level with the least-served active one."""
        function = waiter.function
        self._advance()
        idle = self._since - self._released.get(function, float("-inf")) > IDLE_AFTER_S
        if idle and function not in self._running and not any(w.function == function for w in self._waiting):
            active = [self._usage.get(f, 0.0) for f in {*self._running, *(w.function for w in self._waiting)}]
            if active:
                self._usage[function] = max(self._usage.get(function, 0.0), min(active))
        self._waiting.append(waiter)

    def _take(self, function: str) -> None:
        self._advance()
        self._free -= 1
        self._running[function] = self._running.get(function, 0) + 1

    def _grant(self) -> None:
        """Hand free slots to waiters (called with the lock held)."""
        while self._free > 0:
            waiter = self._pick(self._resuming) or self._pick(self._waiting)
            if waiter is None:
                return
            self._take(waiter.function)
            if waiter.future is not None and waiter.loop is not None:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            else:
                waiter.event.set()

    def _pick(self, queue: deque[_Waiter]) -> _Waiter | None:
        best: _Waiter | None = None
        for w in queue:
            if self._running.get(w.function, 0) >= self.share:
                continue
            if best is None or self._usage.get(w.function, 0.0) < self._usage.get(best.function, 0.0):
                best = w
        if best is not None:
            queue.remove(best)
        return best


def _wake(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)
