"""Zig guests on the Zig SDK (guest-sdk/zig), built with the real toolchain: the same hostile guests as C hit the
same limits, and the SDK reads the event, builds requests and responses, and reaches env, log, fetch and kv."""

from __future__ import annotations

import logging

import httpx
import pytest

from edgefn.build.languages import build_source
from edgefn.build.toolchain import cache_dir
from edgefn.core.events import Body, EdgeRequest, EdgeResponse, Event, EventConfig
from edgefn.core.exceptions import CpuBudgetExhausted, FunctionError, GuestTrap, InvalidResult, MemoryLimitExceeded, WallClockTimeout
from tests.conftest import REPO, log_lines, make_event
from tests.servers import guest_beside_origin

GUESTS_ZIG = REPO / "tests" / "guests" / "zig"


@pytest.fixture(scope="session")
def zig_guest(tmp_path_factory):
    out = tmp_path_factory.mktemp("zig-guests")
    built: dict[str, bytes] = {}

    def _build(name: str) -> bytes:
        if name not in built:
            built[name] = build_source(GUESTS_ZIG / f"{name}.zig", out / f"{name}.wasm", "freestanding", cache_dir())
        return built[name]

    return _build


@pytest.fixture
def zig_fn(zig_guest, deploy):
    def _fn(name: str, **kwargs):
        return deploy(zig_guest(name), name=name.replace("_", "-"), **kwargs)

    return _fn


def _header(message, name):
    entries = message.headers.get(name, [])
    return [value for _, value in entries]


def test_zig_infinite_loop_exhausts_fuel_then_runtime_still_serves(runtime, zig_fn):
    with pytest.raises(CpuBudgetExhausted):
        runtime.invoker.invoke_sync(zig_fn("infinite_loop", fuel=5_000_000), make_event())
    assert runtime.invoker.invoke_sync(zig_fn("echo"), make_event()).result.status == 200


def test_zig_infinite_loop_hits_timeout(runtime, zig_fn):
    with pytest.raises(WallClockTimeout):
        runtime.invoker.invoke_sync(zig_fn("infinite_loop", fuel=10**15, timeout_ms=100), make_event())


def test_zig_memory_bomb_hits_cap(runtime, zig_fn):
    with pytest.raises(MemoryLimitExceeded) as info:
        runtime.invoker.invoke_sync(zig_fn("memory_bomb", memory_mb=8, fuel=10**12), make_event())
    assert "bytes asked for" in str(info.value) and info.value.report.peak_memory_bytes > 4 * 1024 * 1024
    assert runtime.invoker.invoke_sync(zig_fn("echo"), make_event()).result.status == 200


def test_zig_traps_carry_their_code(runtime, zig_fn):
    with pytest.raises(GuestTrap) as div:
        runtime.invoker.invoke_sync(zig_fn("trap"), make_event(uri="/div0"))
    assert div.value.trap_code == "integer_division_by_zero"
    with pytest.raises(GuestTrap) as unreachable:
        runtime.invoker.invoke_sync(zig_fn("trap"), make_event(uri="/other"))
    assert unreachable.value.trap_code == "unreachable"


def test_zig_oversized_result_is_invalid(runtime, zig_fn):
    with pytest.raises(InvalidResult, match="oversized"):
        runtime.invoker.invoke_sync(zig_fn("oversized", max_result_bytes=65536), make_event())


def test_the_zig_sdk_reads_the_event_and_builds_results(runtime, zig_fn, caplog):
    caplog.set_level(logging.INFO)
    fn = zig_fn("echo", env={"GREETING": "hey"})
    event = make_event(uri="/x", querystring="a=1", method="POST", body=Body(b"data"), request_id="req-zig",
                       headers={"host": [("Host", "example.test")], "user-agent": [("User-Agent", "pytest-zig")]})
    res = runtime.invoker.invoke_sync(fn, event).result
    assert isinstance(res, EdgeResponse) and res.status == 200 and _header(res, "x-many") == ["1", "2"]
    assert res.body.data == b"method=POST uri=/x qs=a=1 ua=pytest-zig ip=127.0.0.1 id=req-zig body=data greeting=hey"
    assert any("echo.zig saw /x" in line for _, line in log_lines(caplog))
    passed = runtime.invoker.invoke_sync(fn, make_event(uri="/pass")).result
    assert isinstance(passed, EdgeRequest) and passed.uri == "/pass"
    rewritten = runtime.invoker.invoke_sync(fn, make_event("origin-request", uri="/in")).result
    assert isinstance(rewritten, EdgeRequest) and rewritten.uri == "/from-zig" and _header(rewritten, "x-zig") == ["rewrote"]
    req = EdgeRequest(method="GET", uri="/", querystring="", headers={}, client_ip="127.0.0.1")
    origin = EdgeResponse(status=202, status_description="Accepted", headers={"x-origin": [("X-Origin", "1")]}, body=Body(b"kept"))
    shaped = runtime.invoker.invoke_sync(fn, Event(EventConfig("viewer-response", "r", "test"), req, origin)).result
    assert shaped.status == 202 and shaped.body.data == b"kept" and _header(shaped, "x-zig") == ["seen"] and _header(shaped, "x-origin") == ["1"]
    with pytest.raises(FunctionError) as failed:
        runtime.invoker.invoke_sync(fn, make_event(uri="/fail"))
    assert failed.value.guest_error_type == "AskedToFail"


@pytest.fixture(scope="module")
def zig_server(tmp_path_factory):
    settings = 'memory_mb = 16\nenv = { TARGET = "{origin}/seen" }\n'
    with guest_beside_origin(tmp_path_factory.mktemp("zig-outbound"), GUESTS_ZIG / "echo.zig", settings) as served:
        yield served


def test_zig_fetch_and_kv_through_a_real_server(zig_server):
    server, _ = zig_server
    fetched = httpx.get(f"{server.base}/fetch", timeout=30)
    assert fetched.status_code == 200 and fetched.text.startswith("200 ") and '"x-probe":"zig"' in fetched.text and '"body":"ping"' in fetched.text
    first = httpx.get(f"{server.base}/kv", timeout=30).text
    second = httpx.get(f"{server.base}/kv", timeout=30).text
    assert first.startswith("count=") and int(second.split()[0][6:]) == int(first.split()[0][6:]) + 1
    assert second.endswith("keys=1 deleted=false")
    refused = httpx.get(f"{server.base}/kv-other", timeout=30)
    assert refused.status_code == 500 and refused.text.startswith("KvRefused: kv refused: namespace 'private' is not granted")
