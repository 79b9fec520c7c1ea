"""CPU follows memory, as Lambda's does: the default budget and the share of the node's guest CPU scale with memory_mb."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edgefn.core.app import FUEL_PER_MB, FunctionSpec, Limits, default_fuel
from edgefn.core.exceptions import CpuBudgetExhausted, ManifestError
from edgefn.manifest.load import load_manifest
from edgefn.manifest.resolve import limits_of
from edgefn.manifest.schema import FunctionConfig
from edgefn.runtime.invoker import Runtime
from tests.conftest import RETURN_OK, make_event, wat_guest

INFINITE_LOOP = "(loop $l (br $l)) (unreachable)"
# a fixed amount of work (about a million loop turns), then a 200
FIXED_WORK = (
    "(local $i i32) (local.set $i (i32.const 1000000))"
    " (block $d (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $d (i32.eqz (local.get $i))) (br $l)))"
    f" {RETURN_OK}"
)


def _function(tmp_path: Path, body: str) -> FunctionConfig:
    (tmp_path / "f.c").write_text("int x;\n")
    (tmp_path / "edgefn.toml").write_text(f'[functions.f]\nsource = "f.c"\n{body}')
    return load_manifest(tmp_path / "edgefn.toml").functions["f"]


def test_the_default_budget_follows_memory_and_an_explicit_fuel_wins(tmp_path):
    assert limits_of(_function(tmp_path, "")).fuel == 2_000_000_000 == default_fuel(128)
    assert limits_of(_function(tmp_path, "memory_mb = 256\n")).fuel == 4_000_000_000
    assert limits_of(_function(tmp_path, "memory_mb = 10240\n")).fuel == 10_240 * FUEL_PER_MB
    assert limits_of(_function(tmp_path, "memory_mb = 256\nfuel = 5000\n")).fuel == 5000
    # below Lambda's 128 MB floor the cap on linear memory tightens, the CPU does not shrink
    assert limits_of(_function(tmp_path, "memory_mb = 16\n")).fuel == default_fuel(128)
    assert Limits(memory_mb=512).fuel == 4 * Limits().fuel and Limits(memory_mb=512).cpu_weight == 4.0


def test_memory_mb_accepts_lambdas_range_and_names_it_past_the_top(tmp_path):
    assert _function(tmp_path, "memory_mb = 10240\n").memory_mb == 10_240
    with pytest.raises(ManifestError) as info:
        _function(tmp_path, "memory_mb = 10241\n")
    assert info.value.key == "functions.f.memory_mb" and "10,240" in str(info.value)


def test_doubling_memory_doubles_what_a_cpu_bound_guest_may_burn(tmp_path):
    with Runtime(tmp_path / "store", workers=1) as rt:
        digest = rt.store.add(wat_guest(INFINITE_LOOP))
        burned = {}
        for mb in (128, 256):
            fn = FunctionSpec(name=f"spin{mb}", digest=digest, limits=Limits(memory_mb=mb, timeout_ms=300_000))
            with pytest.raises(CpuBudgetExhausted) as info:
                rt.invoker.invoke_sync(fn, make_event(request_id=f"r-{mb}"))
            assert info.value.report is not None
            burned[mb] = info.value.report.fuel_used
        assert burned == {128: 2_000_000_000, 256: 4_000_000_000}


def test_under_contention_a_function_with_twice_the_memory_gets_twice_the_cpu(tmp_path):
    """One guest CPU slot, two functions running the same fixed work from four threads each: completions
    follow memory_mb (256 against 128)."""
    with Runtime(tmp_path / "store", workers=1) as rt:
        digest = rt.store.add(wat_guest(FIXED_WORK))
        functions = [FunctionSpec(name=f"work{mb}", digest=digest, limits=Limits(memory_mb=mb, fuel=10**12)) for mb in (128, 256)]
        done = {fn.name: 0 for fn in functions}
        stop = threading.Event()
        lock = threading.Lock()

        def hammer(fn: FunctionSpec) -> None:
            while not stop.is_set():
                rt.invoker.invoke_sync(fn, make_event())
                with lock:
                    done[fn.name] += 1

        threads = [threading.Thread(target=hammer, args=(fn,)) for fn in functions for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        try:  # enough runs for the ratio to settle, however slow the machine is
            while min(done.values()) < 150 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert min(done.values()) >= 150, done
        ratio = done["work256"] / done["work128"]
        assert 1.6 <= ratio <= 2.5, done
        assert rt.invoker.scheduler.snapshot()["weights"] == {"work256": 2.0}
