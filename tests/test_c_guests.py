"""C guests built with the real toolchain and SDK: hostile ones hit their limits, the SDK round-trips data."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings

from edgefn.core.app import Limits
from edgefn.core.events import Body, EdgeResponse, Event
from edgefn.core.exceptions import (
    CpuBudgetExhausted,
    GuestTrap,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from edgefn.runtime.sandbox import StoreLimits
from tests.conftest import REPO, log_lines, make_event
from tests.test_abi_roundtrip import requests


@pytest.fixture
def c_fn(c_guest, deploy):
    def _fn(name: str, **kwargs):
        return deploy(c_guest(name), name=name.replace("_", "-"), **kwargs)

    return _fn


def test_c_infinite_loop_exhausts_fuel_then_runtime_still_serves(runtime, c_fn):
    spin = c_fn("infinite_loop", fuel=5_000_000)
    with pytest.raises(CpuBudgetExhausted):
        runtime.invoker.invoke_sync(spin, make_event())
    assert runtime.invoker.invoke_sync(c_fn("echo"), make_event()).result.status == 200


def test_c_infinite_loop_hits_timeout(runtime, c_fn):
    with pytest.raises(WallClockTimeout):
        runtime.invoker.invoke_sync(c_fn("infinite_loop", fuel=10**15, timeout_ms=100), make_event())


def test_c_memory_bomb_hits_cap(runtime, c_fn):
    with pytest.raises(MemoryLimitExceeded) as info:
        runtime.invoker.invoke_sync(c_fn("memory_bomb", memory_mb=8), make_event())
    # it filled all the linear memory memory_mb leaves after the tables' share, to the last page
    linear = StoreLimits.of(Limits(memory_mb=8)).linear_bytes
    assert linear // 65536 * 65536 - 65536 < info.value.report.peak_memory_bytes <= linear <= 8 * 1024 * 1024
    assert "bytes asked for" in str(info.value)
    assert runtime.invoker.invoke_sync(c_fn("echo"), make_event()).result.status == 200


@pytest.mark.parametrize("status", [200, 255, 256, 404, 599])
def test_c_continue_in_a_response_trigger_hands_back_the_response_itself(runtime, c_fn, status):
    """edgefn_continue in a response trigger sends only the status (guest-sdk/c/README.md): the host keeps the
    incoming response as it is, body and headers, with nothing to decode or check."""
    event = make_event("viewer-response")
    event = Event(event.config, event.request, EdgeResponse(status, "As Sent", {"x-origin": [("X-Origin", "kept")]}, Body(b"origin body")))
    done = runtime.invoker.invoke_sync(c_fn("passthrough"), event)
    assert done.result is event.response


def test_c_continue_in_a_request_trigger_continues_with_the_request(runtime, c_fn):
    event = make_event("origin-request", uri="/kept")
    assert runtime.invoker.invoke_sync(c_fn("passthrough"), event).result is event.request


def test_c_deep_recursion_traps(runtime, c_fn):
    with pytest.raises(GuestTrap):
        runtime.invoker.invoke_sync(c_fn("deep_recursion"), make_event())


def test_c_division_by_zero_trap_code(runtime, c_fn):
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(c_fn("trap"), make_event(uri="/div0"))
    assert info.value.trap_code == "integer_division_by_zero"
    with pytest.raises(GuestTrap) as info:
        runtime.invoker.invoke_sync(c_fn("trap"), make_event(uri="/other"))
    assert info.value.trap_code == "unreachable"


def test_c_global_state_does_not_leak(runtime, c_fn):
    fn = c_fn("global_state")
    counts = [runtime.invoker.invoke_sync(fn, make_event()).result.headers["x-count"][0][1] for _ in range(3)]
    assert counts == ["1", "1", "1"]


def test_c_env(runtime, c_fn):
    long_value = "g" * 500  # longer than the SDK's first buffer: exercises the env_get retry
    result = runtime.invoker.invoke_sync(c_fn("env", env={"GREETING": long_value}), make_event()).result
    assert result.headers["x-greeting"] == [("X-Greeting", long_value)]
    assert "x-missing" not in result.headers
    assert result.body.data == f"GREETING={long_value}\nMISSING=(unset)\n".encode()


def test_c_logger_levels_line_cut_and_cap(runtime, c_fn, caplog):
    fn = c_fn("logger")
    with caplog.at_level(logging.DEBUG, logger="edgefn.function.logger"):
        runtime.invoker.invoke_sync(fn, make_event(request_id="r1", querystring="long=10000"))
        runtime.invoker.invoke_sync(fn, make_event(request_id="r2", querystring="flood=5000"))
    r1 = [(level, line) for level, line in log_lines(caplog) if line.startswith("r1\t")]
    assert (logging.DEBUG, "r1\tlogger: debug line") in r1
    assert any(level == logging.ERROR for level, _ in r1)
    longest = max(len(m) for _, m in r1)
    assert longest == len("r1\t") + 4096  # lines are cut at 4 KiB
    r2 = [line for _, line in log_lines(caplog) if line.startswith("r2\t")]
    assert any("log lines dropped" in m for m in r2)
    assert sum(len(m) - 3 for m in r2) < 70 * 1024  # 64 KiB cap plus the notice


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_c_sdk_echoes_random_requests(runtime, c_fn, request):
    fn = c_fn("echo")
    result = runtime.invoker.invoke_sync(fn, make_event(**vars(request))).result
    assert isinstance(result, EdgeResponse) and result.status == 200
    assert result.body == Body(request.body.data if request.body else b"")
    for name, entries in request.headers.items():
        assert result.headers[f"x-echo-{name}"] == [(f"X-Echo-{key}", value) for key, value in entries]


# --- `edgefn dev`'s split C build: the SDK compiled once, the function against its declarations -------------

#: every example's C source but those built with a layer (tests/test_layers.py builds c-layer's, linked)
EXAMPLE_C = sorted(p for p in (REPO / "examples").glob("*/src/*.c") if "layers =" not in (p.parent.parent / "edgefn.toml").read_text())


@pytest.mark.parametrize("source", EXAMPLE_C, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_the_dev_build_of_a_c_function_behaves_as_the_production_build(runtime, deploy, tmp_path, source):
    from edgefn.build.toolchain import cache_dir, compile_c
    from edgefn.core import events

    response = EdgeResponse(200, "OK", {"content-type": [("Content-Type", "text/html")]}, Body(b"<p>origin</p>"))
    event = make_event("viewer-response" if "security-headers" in source.name else "viewer-request", uri="/old/docs", querystring="page=2")
    if event.config.event_type == "viewer-response":
        event.response = response
    results = {}
    for split in (False, True):
        out = tmp_path / f"{split}.wasm"
        compile_c(source, out, "freestanding", cache_dir(), split=split)
        done = runtime.invoker.invoke_sync(deploy(out.read_bytes()), event)
        results[split] = (events.to_json_document(done.result), done.report.fuel_used)
    assert results[True][0] == results[False][0]  # the same result document
    assert results[False][1] <= results[True][1] <= results[False][1] * 1.25  # without cross-file inlining: a little more fuel


def test_a_compile_error_in_a_dev_build_names_the_functions_file_and_line(tmp_path):
    from edgefn.build.toolchain import cache_dir, compile_c
    from edgefn.core.exceptions import BuildError

    source = tmp_path / "broken.c"
    source.write_text('#include "edgefn.h"\n\nedgefn_result edgefn_main(const edgefn_event *ev) {\n    return edgefn_respond(200, "text/plain");\n}\n')
    with pytest.raises(BuildError) as failed:
        compile_c(source, tmp_path / "broken.wasm", "freestanding", cache_dir(), split=True)
    errors = [d for d in failed.value.diagnostics if d.kind == "error"]
    assert errors and errors[0].file.endswith("broken.c") and errors[0].line == 4, failed.value.diagnostics
