"""GuestThreads, the hop from the event loop to a guest thread and back (edgefn/runtime/guest_threads.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edgefn.runtime.guest_threads import GuestThreads

WAIT_S = 30.0


@pytest.fixture
def threads():
    pool = GuestThreads(3, "test-guest")
    yield pool
    pool.shutdown()


def test_a_result_and_an_exception_reach_the_awaiting_coroutine_and_done_runs_on_the_thread(threads):
    seen: list[str] = []

    def done() -> None:
        seen.append(threading.current_thread().name)

    def fail() -> None:
        raise ValueError("from the thread")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await threads.submit(loop, lambda a, b: a + b, 2, 3, done=done) == 5
        with pytest.raises(ValueError, match="from the thread"):
            await threads.submit(loop, fail, done=done)

    asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert len(seen) == 2 and all(name.startswith("test-guest_") for name in seen)


def test_threads_start_only_when_none_is_idle_and_never_more_than_the_bound(threads):
    release = threading.Event()
    started = threading.Semaphore(0)

    def block() -> str:
        started.release()
        assert release.wait(WAIT_S)
        return threading.current_thread().name

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert await threads.submit(loop, lambda: 1, done=lambda: None) == 1
        assert await threads.submit(loop, lambda: 2, done=lambda: None) == 2  # the idle thread took it
        assert len(threads._threads) == 1
        futures = [threads.submit(loop, block, done=lambda: None) for _ in range(5)]
        for _ in range(3):  # three run at once (the bound); two wait in the queue
            assert await loop.run_in_executor(None, started.acquire, True, WAIT_S)
        assert len(threads._threads) == 3
        release.set()
        return list(await asyncio.gather(*futures))

    names = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert len(names) == 5 and len(set(names)) <= 3


def test_a_cancelled_awaiter_does_not_stop_the_job_and_done_still_runs(threads):
    release = threading.Event()
    finished = threading.Event()

    def job() -> int:
        assert release.wait(WAIT_S)
        return 7

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future = threads.submit(loop, job, done=finished.set)
        future.cancel()
        release.set()
        assert await loop.run_in_executor(None, finished.wait, WAIT_S)

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


def test_shutdown_runs_done_for_jobs_not_started_and_refuses_new_ones():
    pool = GuestThreads(1, "test-guest")
    release = threading.Event()
    running = threading.Event()
    dones: list[str] = []

    def block() -> None:
        running.set()
        assert release.wait(WAIT_S)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = pool.submit(loop, block, done=lambda: dones.append("ran"))
        queued = pool.submit(loop, lambda: None, done=lambda: dones.append("dropped"))
        assert await loop.run_in_executor(None, running.wait, WAIT_S)
        stopper = threading.Thread(target=pool.shutdown)
        stopper.start()
        with pytest.raises(asyncio.CancelledError):  # dropped while the first still runs
            await queued
        release.set()
        await loop.run_in_executor(None, stopper.join, WAIT_S)
        assert not stopper.is_alive()
        await first
        with pytest.raises(RuntimeError, match="shut down"):
            pool.submit(loop, lambda: None, done=lambda: None)

    asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert sorted(dones) == ["dropped", "ran"]
