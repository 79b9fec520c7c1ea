"""Concurrency limits, throttling, provisioned concurrency and warm/cold counts (docs/concurrency.md).

In-process tests run real guests on the `runtime` fixture (2 guest threads); the slow guest spins on WASI's
monotonic clock, so overlapping invocations overlap for a known wall time on any machine. The end-to-end
tests run a real `edgefn serve` and drive it with httpx and the registry API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from typing import Iterator

import httpx
import pytest

from edgefn.app_build import open_app
from edgefn.control.deploy import control_store_of
from edgefn.control.deploy import deploy as deploy_app
from edgefn.control.store.registry import SqlRegistry
from edgefn.core.app import FunctionSpec
from edgefn.core.exceptions import ConcurrencyConfigError, GuestTrap, Throttled
from edgefn.core.records import AliasRecord
from edgefn.manifest.load import load_manifest
from edgefn.runtime.concurrency import (
    CONCURRENT_LIMIT_EXCEEDED,
    RESERVED_LIMIT_EXCEEDED,
    ConcurrencyLimiter,
    check_reservations,
    min_unreserved,
    provisioned_versions,
)
from edgefn.runtime.invoker import Invocation, Runtime
from tests.conftest import RETURN_OK, log_lines, make_event, wat_guest
from tests.servers import REPO, EdgeServer, edge_server, free_port

CLOCK = '(import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))'


def slow_guest(ms: int) -> bytes:
    """Answers 200 after spinning `ms` ms of wall time on the monotonic clock (no sleep in the sandbox)."""
    handle = f"""(local $t0 i64)
      (drop (call $now (i32.const 1) (i64.const 1) (i32.const 8)))
      (local.set $t0 (i64.load (i32.const 8)))
      (block $done (loop $spin
        (drop (call $now (i32.const 1) (i64.const 1) (i32.const 8)))
        (br_if $done (i64.ge_u (i64.sub (i64.load (i32.const 8)) (local.get $t0)) (i64.const {ms * 1_000_000})))
        (br $spin)))
      {RETURN_OK}"""
    return wat_guest(handle, imports=CLOCK)


def burst(runtime: Runtime, fns: list[FunctionSpec]) -> list[Invocation | BaseException]:
    """Start one invocation per spec at once (all admitted or throttled before any finishes); their outcomes."""

    async def all_at_once() -> list[Invocation | BaseException]:
        async with asyncio.timeout(30):
            calls = (runtime.invoker.invoke(fn, make_event(request_id=f"burst-{i}")) for i, fn in enumerate(fns))
            return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(all_at_once())


def split(outcomes: list[Invocation | BaseException]) -> tuple[list[Invocation], list[Throttled]]:
    ok = [o for o in outcomes if isinstance(o, Invocation)]
    throttled = [o for o in outcomes if isinstance(o, Throttled)]
    assert len(ok) + len(throttled) == len(outcomes), outcomes  # nothing else went wrong
    return ok, throttled


# --- in process: the limiter with real guests -----------------------------------------------------


def test_unreserved_pool_throttles_exactly_at_the_limit(runtime, deploy):
    runtime.invoker.limiter.configure(3, {})
    fn = deploy(slow_guest(200), name="busy")
    ok, throttled = split(burst(runtime, [fn] * 5))
    assert len(ok) == 3 and len(throttled) == 2  # the 3rd waited for one of the 2 guest threads: still in flight
    assert {(t.kind, t.reason, t.limit) for t in throttled} == {("throttled", CONCURRENT_LIMIT_EXCEEDED, 3)}
    assert "server.max_concurrency" in str(throttled[0])
    assert runtime.invoker.limiter.in_flight() == 0  # every slot came back
    assert runtime.invoker.counts.get("busy:$LATEST").cold == 3  # throttled invocations never ran
    assert runtime.invoker.limiter.snapshot()["throttled"] == {"busy": 2}
    ok, throttled = split(burst(runtime, [fn] * 3))
    assert (len(ok), len(throttled)) == (3, 0)


def test_reservation_caps_all_versions_of_a_function_together(runtime, deploy):
    runtime.invoker.limiter.configure(10, {"capped": 2})
    latest = deploy(slow_guest(200), name="capped")
    v1 = dataclasses.replace(latest, version="1")
    ok, throttled = split(burst(runtime, [latest, v1, latest, v1, latest]))
    assert sorted(o.report.version for o in ok) == ["$LATEST", "1"]  # one reservation, shared by the versions
    assert len(throttled) == 3
    assert {(t.reason, t.limit, t.function) for t in throttled} == {(RESERVED_LIMIT_EXCEEDED, 2, "capped")}
    assert "functions.capped.reserved_concurrency" in str(throttled[0])
    assert runtime.invoker.limiter.in_flight() == 0


def test_reservation_is_a_guarantee_while_the_unreserved_pool_is_full(runtime, deploy):
    runtime.invoker.limiter.configure(4, {"vip": 1})  # 3 unreserved
    other = deploy(slow_guest(200), name="other")
    vip = dataclasses.replace(other, name="vip")
    outcomes = burst(runtime, [other] * 4 + [vip] * 2)
    ok, throttled = split(outcomes)
    assert sorted(o.report.function for o in ok) == ["other", "other", "other", "vip"]
    assert sorted((t.function, t.reason, t.limit) for t in throttled) == [
        ("other", CONCURRENT_LIMIT_EXCEEDED, 3),  # the unreserved pool is full ...
        ("vip", RESERVED_LIMIT_EXCEEDED, 1),  # ... yet vip ran its one, and never more
    ]


def test_reserved_zero_throttles_every_invocation(runtime, deploy, caplog):
    runtime.invoker.limiter.configure(10, {"off": 0})
    off = deploy(wat_guest(), name="off")
    with caplog.at_level("INFO", logger="edgefn.function.off"):
        with pytest.raises(Throttled) as sync_refusal:
            runtime.invoker.invoke_sync(off, make_event())
        _, throttled = split(burst(runtime, [off]))
    for exc in (sync_refusal.value, *throttled):
        assert (exc.reason, exc.limit, exc.report) == (RESERVED_LIMIT_EXCEEDED, 0, None)
    assert not [line for _, line in log_lines(caplog) if line.startswith("START")]  # refused before it ran
    assert runtime.invoker.invoke_sync(deploy(wat_guest(), name="on"), make_event()).result.status == 200


def test_slot_is_released_after_a_failure_and_held_until_a_cancelled_call_ends(runtime, deploy):
    runtime.invoker.limiter.configure(1, {})
    invoker = runtime.invoker
    with pytest.raises(GuestTrap):
        invoker.invoke_sync(deploy(wat_guest("unreachable"), name="trapper"), make_event())
    assert invoker.limiter.in_flight() == 0
    quick = deploy(wat_guest(), name="quick")

    async def cancel_then_retry() -> None:
        async with asyncio.timeout(30):
            call = asyncio.create_task(invoker.invoke(deploy(slow_guest(300), name="abandoned"), make_event()))
            await asyncio.sleep(0.05)
            call.cancel()  # the viewer went away; the guest runs on until it ends
            with pytest.raises(asyncio.CancelledError):
                await call
            with pytest.raises(Throttled):
                await invoker.invoke(quick, make_event())
            while invoker.limiter.in_flight():
                await asyncio.sleep(0.01)
            assert (await invoker.invoke(quick, make_event())).result.status == 200

    asyncio.run(cancel_then_retry())


def test_reservations_must_leave_a_tenth_unreserved():
    assert (min_unreserved(1000), min_unreserved(5), min_unreserved(1)) == (100, 1, 1)
    check_reservations(1000, {"a": 500, "b": 400})
    check_reservations(5, {"a": 4})
    with pytest.raises(ConcurrencyConfigError) as refused:
        check_reservations(1000, {"a": 500, "b": 401, "c": 0})
    assert "a=500, b=401" in str(refused.value) and "at least 100" in str(refused.value)
    limiter = ConcurrencyLimiter(10, {"a": 2})
    with pytest.raises(ConcurrencyConfigError):
        limiter.configure(10, {"a": 2, "b": 8})
    assert limiter.reserved == {"a": 2} and limiter.unreserved == 8  # the last good limits stay


def test_warm_and_cold_counts_and_init_duration_only_on_cold(runtime, deploy, caplog):
    pooled = dataclasses.replace(deploy(wat_guest(), name="pooled"), reuse_instances=True)
    with caplog.at_level("INFO", logger="edgefn.function.pooled"):
        reports = [runtime.invoker.invoke_sync(pooled, make_event()).report for _ in range(3)]
        v1 = dataclasses.replace(pooled, version="1", prewarm=1)
        assert runtime.invoker.prewarm(v1) == 1  # provisioned: initialised before its first request
        reports.append(runtime.invoker.invoke_sync(v1, make_event()).report)
    assert [r.warm for r in reports] == [False, True, True, True]
    lines = [line for _, line in log_lines(caplog) if line.startswith("REPORT")]
    assert ["Init Duration" in line for line in lines] == [True, False, False, False]
    stats = runtime.invoker.stats()
    assert stats["invocations"] == {"pooled:$LATEST": {"warm": 2, "cold": 1}, "pooled:1": {"warm": 1, "cold": 0}}
    assert stats["idle_instances"] == {"pooled:$LATEST": 1, "pooled:1": 1}


def test_provisioned_settings_map_to_versions():
    aliases = {("f", "live"): AliasRecord("f", "live", 1, extra_version=2, extra_weight=0.25), ("g", "live"): AliasRecord("g", "live", 3)}
    provisioned = {("f", "live"): 4, ("f", "1"): 2, ("g", "live"): 1, ("g", "gone"): 5}
    assert provisioned_versions(provisioned, aliases) == {("f", "1"): 5, ("f", "2"): 1, ("g", "3"): 1}


# --- end to end: a real `edgefn serve` ----------------------------------------------------------------

MANIFEST = """
[app]
name = "concurrency"

[server]
guest_threads = 4

[functions.slow]
source = "slow.wasm"
reserved_concurrency = 2

[functions.pooled]
source = "pooled.wasm"
reuse_instances = true

[functions.fresh]
source = "fresh.wasm"

[[behaviors]]
path_pattern = "/slow/*"
function = "slow"

[[behaviors]]
path_pattern = "/pooled/*"
function = "pooled:live"

[default_behavior]
function = "fresh"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[EdgeServer, SqlRegistry]]:
    tmp = tmp_path_factory.mktemp("concurrency")
    (tmp / "slow.wasm").write_bytes(slow_guest(700))
    (tmp / "pooled.wasm").write_bytes(slow_guest(300))
    (tmp / "fresh.wasm").write_bytes(wat_guest())
    config = tmp / "edgefn.toml"
    config.write_text(MANIFEST)
    # before the server starts: version 1 of pooled behind alias "live" with 2 provisioned instances
    manifest = load_manifest(config)
    app, runtime = open_app(config)
    runtime.close()
    control = control_store_of(config, manifest)
    registry = control.registry
    deploy_app(app, control, runtime.store.read_wasm)
    registry.publish("pooled")
    registry.publish("fresh")
    registry.set_alias(AliasRecord("pooled", "live", 1))
    registry.set_provisioned_concurrency("pooled", "live", 2)
    registry.set_provisioned_concurrency("fresh", "1", 1)  # no reuse_instances: warned about, not used
    with edge_server(config, tls=False) as server:
        yield server, registry


def concurrent_gets(base: str, path: str, n: int) -> list[httpx.Response]:
    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.get(path) for _ in range(n)))

    return asyncio.run(all_at_once())


def info(server: EdgeServer) -> dict:
    return httpx.get(f"{server.base}/_edgefn/info", timeout=10).json()


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_reserved_concurrency_throttles_over_http_with_503_and_retry_after(served):
    server, _ = served
    responses = concurrent_gets(server.base, "/slow/x", 6)
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503, 503]
    for r in responses:
        if r.status_code == 503:
            assert r.headers["x-edgefn-error"] == "throttled" and r.headers["retry-after"] == "1"
    shown = info(server)
    assert shown["concurrency"]["reserved"]["slow"] == {"reserved": 2, "in_flight": 0}
    assert shown["concurrency"]["throttled"]["slow"] == 4
    assert shown["concurrency"]["unreserved"] == 1000 - 2
    assert shown["invocations"]["slow:$LATEST"] == {"warm": 0, "cold": 2}


def test_provisioned_instances_serve_the_first_requests_warm(served):
    server, registry = served
    before = info(server)
    assert before["idle_instances"]["pooled:1"] == 2 and "pooled:1" not in before["invocations"]
    responses = concurrent_gets(server.base, "/pooled/x", 2)
    assert [r.status_code for r in responses] == [200, 200]
    assert {r.headers["x-edgefn-executed-version"] for r in responses} == {"pooled:1"}
    assert info(server)["invocations"]["pooled:1"] == {"warm": 2, "cold": 0}
    log = server.log.read_text()
    for r in responses:
        report = next(line for line in log.splitlines() if f"REPORT RequestId: {r.headers['x-edgefn-request-id']}" in line)
        assert "Init Duration" not in report
    assert "provisioned concurrency 1 on fresh:1 is not used" in log and "reuse_instances = true" in log
    # a change in the registry reaches the running server: one more instance is initialised
    registry.set_provisioned_concurrency("pooled", "live", 3)
    wait_for(lambda: info(server)["idle_instances"]["pooled:1"] == 3, "a third provisioned instance")


def test_a_registry_change_over_the_unreserved_floor_is_not_applied(served):
    server, registry = served
    registry.set_reserved_concurrency("fresh", 950)  # with slow's 2: 48 of 1000 left, under the 100 floor
    wait_for(lambda: "fresh=950" in server.log.read_text(), "the rejection in the log")
    assert "fresh" not in info(server)["concurrency"]["reserved"]  # the last good limits keep serving
    assert httpx.get(f"{server.base}/any", timeout=10).status_code == 200
    registry.set_reserved_concurrency("fresh", 5)
    wait_for(lambda: info(server)["concurrency"]["reserved"].get("fresh") == {"reserved": 5, "in_flight": 0}, "the fixed limits")


def test_serve_refuses_reservations_that_leave_too_little_unreserved(tmp_path):
    (tmp_path / "a.wasm").write_bytes(wat_guest())
    config = tmp_path / "edgefn.toml"
    config.write_text(
        '[server]\nmax_concurrency = 10\n\n[functions.a]\nsource = "a.wasm"\nreserved_concurrency = 6\n\n'
        '[functions.b]\nsource = "a.wasm"\nreserved_concurrency = 4\n\n[default_behavior]\nfunction = "a"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "serve", "--config", str(config), "--port", str(free_port()), "--tls-port", "0", "--admin-port", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "a=6, b=4" in done.stderr and "server.max_concurrency = 10" in done.stderr and "serving" not in done.stderr


def test_pools_of_versions_no_longer_routed_to_are_released():
    from edgefn.runtime.pool import WarmPools

    pools = WarmPools(max_idle=2)
    old, current = pools.pool_for("fn:1", "key-1"), pools.pool_for("fn:2", "key-2")
    assert pools.retain({"fn:2", "fn:$LATEST"}) == ["fn:1"]
    assert old.closed and not current.closed
    assert pools.get("fn:1") is None and pools.get("fn:2") is current
