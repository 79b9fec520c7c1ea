"""runtime/inline.blocked_ms: what counts as a component's wait in the host (a sleep), and what does not
(computing; waiting for the CPU behind another process on the same core), measured on this thread for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgefn.runtime.inline import SLICE_MS, blocked_ms, blocking_mark


def test_a_sleep_counts_as_blocked() -> None:
    mark = blocking_mark()
    time.sleep(0.05)
    assert blocked_ms(mark) >= 40


def test_computing_is_not_blocked() -> None:
    mark = blocking_mark()
    until = time.thread_time() + 0.05
    while time.thread_time() < until:
        pass
    assert blocked_ms(mark) < SLICE_MS


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstats")
def test_waiting_for_the_cpu_behind_another_process_is_not_blocked() -> None:
    """A try descheduled on a busy core did not wait in the host: its function stays inline."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # this thread now shares one core with the hog
        behind_from = _behind_ms()
        mark = blocking_mark()
        wall_until = time.perf_counter() + 0.2
        while time.perf_counter() < wall_until:  # 200 ms of wall clock, much of it behind the hog
            pass
        waited = blocked_ms(mark)
        behind = _behind_ms() - behind_from
    finally:
        os.sched_setaffinity(0, before)
        hog.kill()
        hog.wait(timeout=30)
    assert behind > 2 * SLICE_MS  # the scheduler did make this thread wait for its core, past the slice
    assert waited < SLICE_MS


def _behind_ms() -> float:
    """This thread's time waiting for a CPU so far."""
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e6
