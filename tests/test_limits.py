"""Each limit tripped by a real hostile guest (inline WAT); the runtime keeps serving afterwards."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pytest
import wasmtime

from edgefn.core.events import EdgeResponse
from edgefn.core.exceptions import (
    CpuBudgetExhausted,
    FunctionError,
    GuestTrap,
    InvalidResult,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from edgefn.runtime import engine
from tests.conftest import OK_RESPONSE_DATA, RETURN_OK, log_lines, make_event, wat_guest

INFINITE_LOOP = "(loop $l (br $l)) (unreachable)"
MEMORY_BOMB = "(block $done (loop $l (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $l))) (unreachable)"


@pytest.fixture
def healthy(deploy):
    return deploy(wat_guest(), name="healthy")


def assert_still_serves(runtime, healthy) -> None:
    done = runtime.invoker.invoke_sync(healthy, make_event(request_id="after"))
    assert isinstance(done.result, EdgeResponse) and done.result.status == 200


def test_infinite_loop_exhausts_cpu_budget(runtime, deploy, healthy):
    fn = deploy(wat_guest(INFINITE_LOOP), name="spinner", fuel=1_000_000)
    with pytest.raises(CpuBudgetExhausted) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-loop"))
    err = info.value
    assert (err.function, err.request_id, err.fuel) == ("spinner", "r-loop", 1_000_000)
    assert err.report is not None and err.report.fuel_used == 1_000_000
    assert_still_serves(runtime, healthy)


def test_infinite_loop_hits_wall_clock_timeout(runtime, deploy, healthy):
    fn = deploy(wat_guest(INFINITE_LOOP), name="sleeper", fuel=10**15, timeout_ms=50)
    with pytest.raises(WallClockTimeout) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-time"))
    assert info.value.timeout_ms == 50 and info.value.request_id == "r-time"
    assert info.value.report.duration_ms >= 45
    assert_still_serves(runtime, healthy)


def test_wall_clock_timeout_holds_after_the_ticker_parked_on_an_idle_node(runtime, deploy, healthy):
    """An idle node stops advancing the epoch (no wake-ups); the first guest to run wakes it, so its deadline holds."""
    fn = deploy(wat_guest(INFINITE_LOOP), name="late-sleeper", fuel=10**15, timeout_ms=50)
    runtime.invoker.invoke_sync(healthy, make_event())
    deadline = time.monotonic() + 30
    while not runtime.ticker.parked:
        assert time.monotonic() < deadline, "the epoch ticker never parked on an idle node"
        time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(WallClockTimeout) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-parked"))
    assert info.value.timeout_ms == 50 and time.monotonic() - started < 10
    assert not runtime.ticker.parked
    assert_still_serves(runtime, healthy)


def test_the_ticker_stops_even_when_the_stop_lands_as_it_parks(monkeypatch):
    """`serve` stops its build-time ticker about when an idle ticker parks; a stop landing between the tick
    and the park once cleared its own wake-up and hung the server's start for good (a CI run)."""
    monkeypatch.setattr(engine, "IDLE_AFTER_S", 0.0)  # every idle tick parks: each stop below races a park
    config = wasmtime.Config()
    config.epoch_interruption = True
    eng = wasmtime.Engine(config)
    for attempt in range(200):
        ticker = engine.EpochTicker(eng, 1)
        ticker.start()
        spin_until = time.perf_counter() + 0.0005 + (attempt % 10) * 0.0002  # stops spread around the first tick
        while time.perf_counter() < spin_until:
            pass
        stopper = threading.Thread(target=ticker.stop, daemon=True)
        stopper.start()
        stopper.join(10)
        if stopper.is_alive():
            pytest.fail(f"EpochTicker.stop() hung on attempt {attempt}")


# Reads a word on each of pages 0, 1 and 5 (growing to 8 pages first): status 200 if all are zero, else 500;
# then leaves a mark at each, as a guest with a secret would
DIRTY_MEMORY = """
  (local $seen i32)
  (if (i32.lt_u (memory.size) (i32.const 8)) (then (drop (memory.grow (i32.sub (i32.const 8) (memory.size))))))
  (local.set $seen (i32.or (i32.load (i32.const 4000)) (i32.or (i32.load (i32.const 70000)) (i32.load (i32.const 330000)))))
  (i32.store (i32.const 4000) (i32.const 0x5ec2e7))
  (i32.store (i32.const 70000) (i32.const 0x5ec2e7))
  (i32.store (i32.const 330000) (i32.const 0x5ec2e7))
  (if (local.get $seen) (then (i32.store8 (i32.const 25) (i32.const 244))))
  (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"""
# The same over every 4 KiB page of 8 wasm pages (128 host pages): past what the runtime zeroes in place, so
# the recycled region is discarded instead (runtime/_native.c, KEEP_RESIDENT_PAGES)
DIRTY_MANY_PAGES = """
  (local $at i32) (local $seen i32)
  (if (i32.lt_u (memory.size) (i32.const 8)) (then (drop (memory.grow (i32.sub (i32.const 8) (memory.size))))))
  (local.set $at (i32.const 4096))
  (block $done (loop $next
    (br_if $done (i32.ge_u (local.get $at) (i32.const 524288)))
    (local.set $seen (i32.or (local.get $seen) (i32.load (local.get $at))))
    (i32.store (local.get $at) (i32.const 0x5ec2e7))
    (local.set $at (i32.add (local.get $at) (i32.const 4096)))
    (br $next)))
  (if (local.get $seen) (then (i32.store8 (i32.const 25) (i32.const 244))))
  (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"""
# Loads from page 5 of a 1-page memory: must trap, whatever a previous instance's memory there held
READ_PAST_THE_END = "(drop (i32.load (i32.const 330000))) (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"


def test_a_fresh_instance_never_sees_what_an_earlier_one_left_in_memory(runtime, deploy):
    """Linear memory is recycled between Stores (runtime/_native.c): each one must still start all zero."""
    fn = deploy(wat_guest(DIRTY_MEMORY), name="dirty")
    for i in range(40):
        result = runtime.invoker.invoke_sync(fn, make_event(request_id=f"r-{i}")).result
        assert isinstance(result, EdgeResponse) and result.status == 200, f"invocation {i} saw an earlier instance's memory"


def test_a_fresh_instance_never_sees_an_earlier_one_that_touched_many_pages(runtime, deploy):
    """Past the pages zeroed in place, a recycled memory is discarded: still all zero to the next Store."""
    fn = deploy(wat_guest(DIRTY_MANY_PAGES), name="dirty-many")
    for i in range(10):
        result = runtime.invoker.invoke_sync(fn, make_event(request_id=f"r-{i}")).result
        assert isinstance(result, EdgeResponse) and result.status == 200, f"invocation {i} saw an earlier instance's memory"


def test_a_recycled_memory_is_no_larger_than_the_new_module_asked_for(runtime, deploy):
    """A smaller memory reusing a region an earlier instance grew: past its end is still out of bounds."""
    dirty, small = deploy(wat_guest(DIRTY_MEMORY), name="dirty"), deploy(wat_guest(READ_PAST_THE_END), name="small")
    for i in range(10):
        assert runtime.invoker.invoke_sync(dirty, make_event()).result.status == 200
        with pytest.raises(GuestTrap) as info:
            runtime.invoker.invoke_sync(small, make_event(request_id=f"r-{i}"))
        assert info.value.trap_code == "memory_out_of_bounds"


def test_a_fresh_instance_reports_the_fuel_and_memory_a_pooled_one_does(runtime, deploy):
    """The one-call fresh path (runtime/_native.c run_fresh) and the step-by-step Store of a warm pool
    (fastcall.CoreStore) run the same guest: the same fuel and the same peak memory in REPORT."""
    fresh = deploy(wat_guest(DIRTY_MEMORY), name="measured")
    pooled = dataclasses.replace(fresh, name="measured-pooled", reuse_instances=True)
    a = runtime.invoker.invoke_sync(fresh, make_event(request_id="r-fresh")).report
    b = runtime.invoker.invoke_sync(pooled, make_event(request_id="r-pooled")).report
    assert not a.warm and not b.warm
    assert a.fuel_used == b.fuel_used > 0
    assert a.peak_memory_bytes == b.peak_memory_bytes == 8 * 65536


def test_a_start_function_that_traps_is_a_trap_at_instantiation(runtime, deploy, healthy):
    """A fresh instance is made and called in one step (runtime/_native.c run_fresh): a trap while instantiating
    is still the guest's trap, with its code and frames."""
    extra = OK_RESPONSE_DATA + " (func $boot (unreachable)) (start $boot)"
    fn = deploy(wat_guest(RETURN_OK, extra=extra), name="bad-start")
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-start"))
    assert info.value.trap_code == "unreachable" and info.value.backtrace[0].startswith("boot")
    assert_still_serves(runtime, healthy)


def test_a_table_larger_than_memory_mb_allows_is_refused_at_instantiation(runtime, deploy, healthy):
    """Tables count against memory_mb (sandbox.StoreLimits): a module declaring a larger one is refused while
    instantiating, as a memory limit, not as a crash."""
    fn = deploy(wat_guest(extra=OK_RESPONSE_DATA + " (table 1000000 funcref)"), name="big-table", memory_mb=16)
    with pytest.raises(MemoryLimitExceeded) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-table"))
    assert "instantiation refused" in str(info.value) and info.value.memory_mb == 16
    assert_still_serves(runtime, healthy)


def test_memory_bomb_hits_memory_cap(runtime, deploy, healthy):
    fn = deploy(wat_guest(MEMORY_BOMB), name="bomb", memory_mb=8)
    with pytest.raises(MemoryLimitExceeded) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-mem"))
    assert info.value.memory_mb == 8
    assert info.value.report.peak_memory_bytes <= 8 * 1024 * 1024
    assert_still_serves(runtime, healthy)


def test_module_whose_initial_memory_exceeds_cap(runtime, deploy, healthy):
    fn = deploy(wat_guest(pages=512), name="fat", memory_mb=16)  # 32 MiB at start
    with pytest.raises(MemoryLimitExceeded) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert "512 pages" in str(info.value)
    assert_still_serves(runtime, healthy)


def test_deep_recursion_is_a_stack_overflow_trap(runtime, deploy, healthy):
    extra = OK_RESPONSE_DATA + " (func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))"
    fn = deploy(wat_guest("(drop (call $down (i32.const 0))) " + RETURN_OK, extra=extra), name="recursive")
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert info.value.trap_code == "stack_overflow"
    assert_still_serves(runtime, healthy)


def test_trap_carries_code_and_wasm_backtrace(runtime, deploy, healthy):
    extra = OK_RESPONSE_DATA + " (func $explode (unreachable))"
    fn = deploy(wat_guest("(call $explode) " + RETURN_OK, extra=extra), name="trapper")
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-trap"))
    err = info.value
    assert err.trap_code == "unreachable"
    assert err.backtrace and err.backtrace[0].startswith("explode")
    assert any(frame.startswith("handle") for frame in err.backtrace)
    assert_still_serves(runtime, healthy)


def test_divide_by_zero_trap(runtime, deploy):
    fn = deploy(wat_guest("(drop (i32.div_u (i32.const 1) (i32.sub (local.get $len) (local.get $len)))) " + RETURN_OK))
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert info.value.trap_code == "integer_division_by_zero"


def test_garbage_result_is_invalid(runtime, deploy, healthy):
    extra = r'(data (i32.const 16) "\ff\ff\00garbage")'
    fn = deploy(wat_guest(RETURN_OK, extra=extra), name="garbage")
    with pytest.raises(InvalidResult) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert "not a CBOR document" in info.value.reason
    assert_still_serves(runtime, healthy)


def test_oversized_result_is_invalid(runtime, deploy, healthy):
    handle = "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 40000))"
    fn = deploy(wat_guest(handle), name="chatty", max_result_bytes=32768)
    with pytest.raises(InvalidResult) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert "oversized" in info.value.reason and "32768" in info.value.reason
    assert_still_serves(runtime, healthy)


def test_out_of_bounds_result_pointer_is_invalid(runtime, deploy, healthy):
    handle = "(i64.or (i64.shl (i64.const 0xFFFF0000) (i64.const 32)) (i64.const 100))"
    fn = deploy(wat_guest(handle), name="wild")
    with pytest.raises(InvalidResult) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert "out of bounds" in info.value.reason
    assert_still_serves(runtime, healthy)


def test_out_of_bounds_alloc_pointer_is_invalid(runtime, deploy, healthy):
    wat = """(module (memory (export "memory") 1) (func (export "edgefn_abi_v1"))
      (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0x7FFFFFF0))
      (func (export "edgefn_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    fn = deploy(wasmtime.wat2wasm(wat), name="liar")
    with pytest.raises(InvalidResult) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert "unusable address" in info.value.reason
    assert_still_serves(runtime, healthy)


def test_empty_result_is_invalid(runtime, deploy):
    fn = deploy(wat_guest("(i64.const 0)"))
    with pytest.raises(InvalidResult, match="empty result"):
        runtime.invoker.invoke_sync(fn, make_event())


@pytest.mark.parametrize(
    ("cbor_hex", "fragment"),
    [
        ("a16673746174757318 63".replace(" ", ""), "outside 200..599"),  # {"status": 99}
        ("a167686561646572738101", "result.headers must be"),  # {"headers": [1]}
        ("a1637572696474657374", "must start with '/'"),  # {"uri": "test"}
        ("83010203", "result must be a map"),  # [1, 2, 3]
    ],
)
def test_wrong_shape_results_name_the_field(runtime, deploy, cbor_hex, fragment):
    data = bytes.fromhex(cbor_hex)
    escaped = "".join(f"\\{b:02x}" for b in data)
    handle = f"(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len(data)}))"
    fn = deploy(wat_guest(handle, extra=f'(data (i32.const 16) "{escaped}")'))
    with pytest.raises(InvalidResult) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert fragment in info.value.reason


def test_function_error_document(runtime, deploy):
    import cbor2

    data = cbor2.dumps({"errorType": "BadToken", "errorMessage": "token expired"})
    escaped = "".join(f"\\{b:02x}" for b in data)
    handle = f"(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len(data)}))"
    fn = deploy(wat_guest(handle, extra=f'(data (i32.const 16) "{escaped}")'), name="picky")
    with pytest.raises(FunctionError) as info:
        runtime.invoker.invoke_sync(fn, make_event())
    assert (info.value.error_type, info.value.error_message) == ("BadToken", "token expired")


def test_fresh_instance_per_invocation_leaks_no_state(runtime, deploy):
    # a global counter; the response status is 200 + counter, so a leaked global would show as 202, 203...
    extra = r'(global $count (mut i32) (i32.const 0)) (data (i32.const 16) "\a1\66status\19\00\c8")'
    handle = """
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (i32.store8 (i32.const 26) (i32.add (i32.const 200) (global.get $count)))
      (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 11))"""
    fn = deploy(wat_guest(handle, extra=extra), name="counter")
    statuses = [runtime.invoker.invoke_sync(fn, make_event()).result.status for _ in range(5)]
    assert statuses == [201] * 5


def test_report_line_is_written_to_the_function_log(runtime, deploy, caplog):
    fn = deploy(wat_guest(), name="reported", memory_mb=64)
    with caplog.at_level(logging.INFO, logger="edgefn.function.reported"):
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-report"))
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-report-2"))
    lines = [line for _, line in log_lines(caplog)]
    reports = [line for line in lines if line.startswith("REPORT")]
    assert len(reports) == 2
    first, second = reports
    for field in ("RequestId: r-report", "Duration:", "Billed Duration:", "Memory Size: 64 MB", "Max Memory Used: 1 MB", "Fuel Used:", "Outcome: ok"):
        assert field in first
    assert "Init Duration:" in first  # the first invocation loaded the module
    assert "Init Duration:" not in second  # the second found it ready in memory
    assert "START RequestId: r-report Version: $LATEST" in lines and "END RequestId: r-report" in lines


def test_fuel_after_a_wall_clock_timeout_is_reported_as_a_lower_bound(runtime, deploy, healthy):
    fn = deploy(wat_guest(INFINITE_LOOP), name="spin-timeout", fuel=10**15, timeout_ms=100)
    with pytest.raises(WallClockTimeout) as info:
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-fuel"))
    report = info.value.report
    assert not report.fuel_exact
    assert f"Fuel Used: >={report.fuel_used} (timed out)" in report.line()
    exhausted = deploy(wat_guest(INFINITE_LOOP), name="spin-fuel", fuel=2_000_000)
    with pytest.raises(CpuBudgetExhausted) as out_of_fuel:
        runtime.invoker.invoke_sync(exhausted, make_event())
    assert out_of_fuel.value.report.fuel_exact and "Fuel Used: 2000000\t" in out_of_fuel.value.report.line()
    assert_still_serves(runtime, healthy)
