"""The threads guests run on when they do not run on the event loop's own (runtime/inline.py).

One job is one call: it goes into a `queue.SimpleQueue` (C, no Python lock), a thread runs it, and its
result reaches the loop in one `call_soon_threadsafe` that settles an asyncio future. That is the whole
hop; `ThreadPoolExecutor.submit` + `asyncio.wrap_future` made it a concurrent Future, a Condition, an idle
semaphore and two chained callbacks, each taken on both threads (~10% of a request's samples in a profile
of a warm guest on a guest thread). Threads start when a job finds none idle, up to `max_threads`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable, TypeVar

__all__ = ["GuestThreads"]

T = TypeVar("T")

#: a queued job: the loop and future its result goes to, the call, and what runs on the thread when it ends
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], Callable[[], None]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the awaiting request went away; the job still ran to its end
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GuestThreads:
    """At most `max_threads` threads running jobs in the order they came."""

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: threads waiting for a job that no submit has reserved
        self._idle = 0
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any, done: Callable[[], None]) -> asyncio.Future[T]:
        """Run `fn(*args)` on a thread; the future (of `loop`) gets its result or exception. `done` runs on the
        thread when the call ends, whether or not anyone still awaits the future."""
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the guest threads are shut down")
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self.max_threads:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._jobs.put((loop, future, fn, args, done))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn, args, done = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting coroutine
                error = exc
            finally:
                done()
            with self._lock:  # idle before the result is out: a submit it prompts finds this thread
                self._idle += 1
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody awaits it
                pass
            del job, future, result, error

    def shutdown(self) -> None:
        """Drop the jobs not started (their `done` runs, their futures are cancelled), let the running ones end,
        and wait for every thread."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue
            loop, future, _, _, done = job
            done()
            try:
                loop.call_soon_threadsafe(future.cancel)
            except RuntimeError:
                pass
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
