"""GuestScheduler on its own: slots, the per-function share, who gets a freed slot, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

import pytest

from edgefn.runtime import scheduler
from edgefn.runtime.scheduler import GuestScheduler


def test_one_function_gets_every_slot_when_it_is_alone():
    s = GuestScheduler(2, functions=1)
    s.acquire_blocking("a")
    s.acquire_blocking("a")  # would block forever if the share were 1
    assert s.snapshot()["running"] == {"a": 2}


def test_with_two_functions_none_holds_every_slot():
    async def scenario() -> list[str]:
        s = GuestScheduler(2, functions=2)
        order: list[str] = []
        await s.acquire("hostile")
        second = asyncio.create_task(s.acquire("hostile"))  # over its share: waits although a slot is free
        await asyncio.sleep(0)
        assert not second.done()
        await asyncio.wait_for(s.acquire("healthy"), 5)  # the free slot is the healthy one's at once
        order.append("healthy")
        s.release("healthy")
        await asyncio.sleep(0)
        assert not second.done()  # still over its share while the first hostile run holds a slot
        s.release("hostile")
        await asyncio.wait_for(second, 5)
        order.append("hostile")
        return order

    assert asyncio.run(scenario()) == ["healthy", "hostile"]


def test_a_freed_slot_goes_to_the_function_holding_fewest():
    async def scenario() -> str:
        s = GuestScheduler(3, functions=3)
        await s.acquire("a")
        await s.acquire("a")
        await s.acquire("b")  # all three slots taken: a holds 2, b holds 1
        wait_a = asyncio.create_task(s.acquire("a"))
        wait_c = asyncio.create_task(s.acquire("c"))
        await asyncio.sleep(0)
        s.release("b")
        done, _ = await asyncio.wait({wait_a, wait_c}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        winner = "c" if wait_c in done else "a"
        wait_a.cancel()
        return winner

    assert asyncio.run(scenario()) == "c"  # a waited first, but c held none


def test_a_run_back_from_io_goes_before_new_admissions():
    s = GuestScheduler(1, functions=2)
    s.acquire_blocking("f")
    s.suspend("f")  # waiting on the network: the slot is free for others
    s.acquire_blocking("g")
    resumed = threading.Event()
    t = threading.Thread(target=lambda: (s.resume("f"), resumed.set()))
    t.start()
    blocked_new = threading.Thread(target=s.acquire_blocking, args=("h",), daemon=True)
    blocked_new.start()
    assert not resumed.wait(0.2)  # g still holds the only slot
    s.release("g")
    assert resumed.wait(5)  # the resumer, not the newcomer h
    assert s.snapshot()["running"] == {"f": 1}
    s.release("f")  # now h gets it
    blocked_new.join(5)
    assert not blocked_new.is_alive()
    t.join(5)


def test_a_cancelled_waiter_holds_nothing():
    async def scenario() -> dict[str, int]:
        s = GuestScheduler(1, functions=2)
        await s.acquire("a")
        waiter = asyncio.create_task(s.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        s.release("a")
        await asyncio.wait_for(s.acquire("c"), 5)
        return s.snapshot()["running"]  # type: ignore[return-value]

    assert asyncio.run(scenario()) == {"c": 1}


def _hold(seconds: float) -> None:
    """Keep a slot busy for `seconds` of slot time (the quantity the scheduler charges)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@pytest.mark.parametrize(("idle_after_s", "first"), [(60.0, "a"), (0.0, "c")])
def test_a_short_gap_between_calls_keeps_a_functions_credit(monkeypatch, idle_after_s, first):
    """`a` used 0.05 s of slot time, `c` 0.1 s, then both queue (`c` first) while `b` runs. Back within
    IDLE_AFTER_S (a thread between two calls), each keeps its credit and `a` gets the freed slot; after an
    idle spell each starts level with the least-served active function, so they tie and `c`, which waited
    longer, goes first."""
    monkeypatch.setattr(scheduler, "IDLE_AFTER_S", idle_after_s)
    s = GuestScheduler(1, functions=3)
    for function, seconds in (("a", 0.05), ("c", 0.1)):
        s.acquire_blocking(function)
        _hold(seconds)
        s.release(function)
    s.acquire_blocking("b")
    _hold(0.2)
    order: list[str] = []

    def call(function: str) -> None:
        s.acquire_blocking(function)
        order.append(function)
        s.release(function)

    waiters = [threading.Thread(target=call, args=(f,), daemon=True) for f in ("c", "a")]
    for n, t in enumerate(waiters, 1):
        t.start()
        _wait_until(lambda n=n: s.snapshot()["waiting"] == n, f"waiter {n} never queued")  # type: ignore[misc]
    s.release("b")
    for t in waiters:
        t.join(30)
    assert order[0] == first, order
