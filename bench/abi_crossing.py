"""What one host<->guest crossing costs in wasmtime-py, and so what ABI v1's shape buys.

    .venv/bin/python bench/abi_crossing.py            # prints a Markdown table, writes bench/results/abi_crossing.json

Each figure is the median of several repeats of a timed loop, in microseconds per operation; the
ratios at the end compare designs measured in this same run (the machine is shared and noisy).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import wasmtime
from common import RESULTS, write_json  # noqa: E402  (also puts the repo on sys.path)

from edgefn.core.app import FunctionSpec
from edgefn.core.events import EdgeRequest, Event, EventConfig
from edgefn.runtime import abi, fastcall  # noqa: E402
from edgefn.runtime.invoker import Runtime

GUEST = """
(module
  (import "edgefn:host/v1" "env_get" (func $env_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\a1\\66status\\18\\c8")
  (func (export "edgefn_abi_v1"))
  (func (export "noop") (param i32) (result i32) (local.get 0))
  (func (export "pull") (param $n i32) (result i32)
    (local $i i32)
    (loop $l
      (drop (call $env_get (i32.const 0) (i32.const 4) (i32.const 64) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32.const 0))
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_handle") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))))
"""


def per_op_us(fn, n: int, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    with Runtime(Path(tempfile.mkdtemp()), workers=1) as rt:
        wasm = wasmtime.wat2wasm(GUEST)
        digest = rt.store.add(wasm)
        loaded, _ = rt.store.load(digest, "bench")
        store = wasmtime.Store(rt.engine)
        store.set_fuel(10**15)
        store.set_epoch_deadline(10**9)
        instance = loaded.pre.instantiate(store)
        exports = instance.exports(store)
        names = list(loaded.info.export_names)
        noop_raw = fastcall.export_nth(store, instance, names.index("noop"))
        noop_hl = exports["noop"]
        pull = exports["pull"]
        from edgefn.runtime.context import InvocationContext, set_current_context

        set_current_context(InvocationContext("bench", "r", {"HOST": b"value"}, lambda level, msg: None))
        results: dict[str, float] = {}
        results["raw C-API call (fastcall.call)"] = per_op_us(lambda: fastcall.call(store, noop_raw, (7,), fastcall.I32), 20000)
        results["wasmtime-py Func.__call__"] = per_op_us(lambda: noop_hl(store, 7), 20000)
        base = per_op_us(lambda: pull(store, 0), 5000)
        per_100 = per_op_us(lambda: pull(store, 100), 200)
        results["guest->host import call (Python callback)"] = (per_100 - base) / 100
        results["Store() + set_fuel/limits/deadline"] = per_op_us(lambda: _fresh_store(rt.engine), 20000)
        results["InstancePre.instantiate"] = per_op_us(lambda: fastcall.instantiate(_fresh_store(rt.engine), loaded.pre), 5000) - results["Store() + set_fuel/limits/deadline"]
        event = Event(
            EventConfig("viewer-request", "r-1", "bench"),
            EdgeRequest("GET", "/index.html", "a=1", {f"x-h{i}": [(f"X-H{i}", "v" * 20)] for i in range(10)}, "127.0.0.1"),
        )
        results["encode event (10 headers) to CBOR"] = per_op_us(lambda: abi.encode_event(event), 20000)
        fn = FunctionSpec("bench", digest)
        import logging

        logging.disable(logging.CRITICAL)
        results["whole invocation (fresh instance, 2 calls, decode)"] = per_op_us(lambda: rt.invoker.invoke_sync(fn, event), 3000)
        set_current_context(None)

    call = results["raw C-API call (fastcall.call)"]
    hl = results["wasmtime-py Func.__call__"]
    cb = results["guest->host import call (Python callback)"]
    per_header_design = 2 * hl + 10 * 2 * cb  # get + set per header through imports, via Func.__call__
    v1 = 2 * call
    summary = {
        "ABI v1 crossings per request (2 raw calls)": v1,
        "a per-field ABI for 10 headers (2 calls + 20 import callbacks)": per_header_design,
        "ratio per-field / v1": per_header_design / v1,
        "ratio Func.__call__ / raw call": hl / call,
    }
    print("| operation | µs |\n|---|---:|")
    for name, us in {**results, **summary}.items():
        print(f"| {name} | {us:.2f} |")
    write_json(RESULTS / "abi_crossing.json", {"us_per_op": results, "summary": summary})


def _fresh_store(engine: wasmtime.Engine) -> wasmtime.Store:
    s = wasmtime.Store(engine)
    s.set_fuel(1_000_000)
    s.set_limits(memory_size=128 << 20)
    s.set_epoch_deadline(1000)
    return s


if __name__ == "__main__":
    main()
