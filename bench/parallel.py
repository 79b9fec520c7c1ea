"""Do two CPU-bound guests run in parallel on 2 cores? (wasmtime-py releases the GIL while wasm runs.)

    .venv/bin/python bench/parallel.py     # prints the figures, writes bench/results/parallel.json

Runs N invocations of a guest that burns ~`ITERATIONS` loop iterations, first on a 1-thread invoker,
then on a 2-thread invoker, through the real async `Invoker.invoke` path. Speed-up = t(1) / t(2).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import wasmtime
from common import RESULTS, write_json  # noqa: E402  (also puts the repo on sys.path)

from edgefn.core.app import FunctionSpec, Limits
from edgefn.core.events import EdgeRequest, Event, EventConfig
from edgefn.runtime.invoker import Runtime

ITERATIONS = 30_000_000
BURN = f"""
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "\\a1\\66status\\18\\c8")
  (func (export "edgefn_abi_v1"))
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_handle") (param i32 i32) (result i64)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (i32.const 31))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {ITERATIONS}))))
    (i32.store8 (i32.const 2000) (local.get $acc))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))))
"""


async def run_batch(rt: Runtime, fn: FunctionSpec, n: int) -> float:
    event = Event(EventConfig("viewer-request", "r", fn.name), EdgeRequest("GET", "/"))
    start = time.perf_counter()
    await asyncio.gather(*(rt.invoker.invoke(fn, event) for _ in range(n)))
    return time.perf_counter() - start


def measure(threads: int, n: int) -> float:
    with Runtime(Path(tempfile.mkdtemp()), workers=threads) as rt:
        fn = FunctionSpec("burn", rt.store.add(wasmtime.wat2wasm(BURN)), Limits(fuel=10**12, timeout_ms=60_000))
        rt.store.load(fn.digest, fn.name)
        asyncio.run(run_batch(rt, fn, 2))  # warm up
        return min(asyncio.run(run_batch(rt, fn, n)) for _ in range(3))


def main() -> None:
    logging.disable(logging.CRITICAL)
    n = 8
    one = measure(1, n)
    two = measure(2, n)
    result = {"cores": os.cpu_count(), "invocations": n, "seconds_1_thread": one, "seconds_2_threads": two, "speedup": one / two}
    print(json.dumps(result, indent=2))
    write_json(RESULTS / "parallel.json", result)


if __name__ == "__main__":
    main()
