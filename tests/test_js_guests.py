"""JavaScript and TypeScript guests, built with the real npm toolchain (esbuild + componentize-qjs) and run by the
real runtime: the Web APIs and async semantics, the same limits and typed errors as C and Python, outbound fetch
and kv through a real server, build errors that name the file and line, and the import check before any compile."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import wasmtime

from edgefn.build.js import build_js, build_key
from edgefn.core.events import Body, EdgeRequest, EdgeResponse
from edgefn.core.exceptions import (
    BuildError,
    ComponentImportNotAllowed,
    CpuBudgetExhausted,
    FunctionError,
    GuestTrap,
    ImportNotAllowed,
    InvalidResult,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from edgefn.runtime import wasm_binary
from edgefn.runtime.invoker import Runtime
from tests.conftest import REPO, log_lines, make_event
from tests.servers import guest_beside_origin

GUESTS_JS = REPO / "tests" / "guests" / "js"


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    out = tmp_path_factory.mktemp("js-guests")
    return {name: build_js(GUESTS_JS / f"{name}{suffix}", out / f"{name}.wasm") for name, suffix in (("hostile", ".js"), ("web", ".ts"))}


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with Runtime(tmp_path_factory.mktemp("js-store"), workers=2) as runtime:
        yield runtime


def _header(message, name):
    """The first value of header `name` of an EdgeRequest or EdgeResponse, or None."""
    entries = message.headers.get(name, [])
    return entries[0][1] if entries else None


def _spec(rt, wasm, name="js", **limits):
    from edgefn.core.app import FunctionSpec, Limits

    env = limits.pop("env", {})
    reuse = limits.pop("reuse_instances", False)
    digest = rt.store.add(wasm)
    rt.store.load(digest, name)  # precompiled, as `edgefn build` does: the request path never compiles a component
    return FunctionSpec(name=name, digest=digest, limits=Limits(**{"memory_mb": 32, "fuel": 100_000_000, **limits}), env=env, reuse_instances=reuse)


def _invoke(rt, spec, uri="/", event_type="viewer-request", **request):
    return rt.invoker.invoke_sync(spec, make_event(event_type, uri=uri, **request))


# --- what a Worker author expects --------------------------------------------------------------------------------


def test_web_apis_and_async_semantics(rt, js, caplog):
    caplog.set_level(logging.INFO)
    spec = _spec(rt, js["web"], env={"GREETING": "hi"})
    out = _invoke(rt, spec, "/probe", querystring="q=%C3%A9t%C3%A9", method="POST", body=Body(b"payload"),
                  headers={"host": [("Host", "example.test")], "user-agent": [("User-Agent", "pytest")]})
    response = out.result
    assert isinstance(response, EdgeResponse) and response.status == 200
    doc = json.loads(response.body.data)
    assert doc["order"] == ["sync", "then"]  # a reaction runs after the synchronous code, as the spec says
    assert doc["all"] == [2, 4, 3] and doc["settled"] == ["rejected", "fulfilled"] and doc["raced"] == 20
    assert doc["caught"] == "inner"
    assert doc["bytes"] == len("héllo ☃ 𝄞".encode()) and doc["roundTrip"] == "héllo ☃ 𝄞"
    assert doc["relative"] == "https://example.test/a/up?x=1#frag"
    assert doc["host"] == "example.test" and doc["query"] == "été"
    assert doc["one"] == "1, 2" and doc["cookies"] == ["a=1", "b=2"]
    assert doc["shout"] == "NPM!"  # an npm package from node_modules, bundled
    assert doc["greeting"] == "hi" and doc["missing"] is None
    assert doc["eventType"] == "viewer-request" and doc["requestId"] == "req-test"
    assert doc["method"] == "POST" and doc["body"] == "payload" and doc["userAgent"] == "pytest"
    assert _header(response, "x-from") == "web.ts" and _header(response, "content-type") == "application/json"
    assert any("web.ts answered /probe" in line for _, line in log_lines(caplog))
    # a component without the Python world's handle-marshal is sent CBOR
    assert rt.store.load(spec.digest, spec.name)[0].info.encoding == "cbor"


def test_request_hooks_continue_rewrite_or_pass_unchanged(rt, js):
    spec = _spec(rt, js["web"])
    passed = _invoke(rt, spec, "/pass").result
    assert isinstance(passed, EdgeRequest) and _header(passed, "x-seen-by") == "web.ts"
    same = _invoke(rt, spec, "/same", querystring="a=1").result
    assert isinstance(same, EdgeRequest) and same.uri == "/same" and same.querystring == "a=1"
    rewritten = _invoke(rt, spec, "/rewrite", querystring="to=there").result
    assert isinstance(rewritten, EdgeRequest) and rewritten.uri == "/rewritten/there" and rewritten.querystring == "to=there"


def test_response_hooks_change_or_keep_the_response(rt, js):
    from edgefn.core.events import Event, EventConfig

    spec = _spec(rt, js["web"])
    for uri, expected in (("/x", "201"), ("/keep", None)):
        req = EdgeRequest(method="GET", uri=uri, querystring="", headers={"host": [("Host", "example.test")]}, client_ip="127.0.0.1")
        res = EdgeResponse(status=201, status_description="Created", headers={"x-origin": [("X-Origin", "1")]}, body=Body(b"origin body"))
        out = rt.invoker.invoke_sync(spec, Event(EventConfig("viewer-response", "req-resp", "test"), req, res)).result
        assert isinstance(out, EdgeResponse) and out.status == 201 and out.body.data == b"origin body"
        assert _header(out, "x-viewer-response") == expected and _header(out, "x-origin") == "1"


def test_fresh_instance_per_request_unless_reused(rt, js):
    fresh = _spec(rt, js["web"], name="fresh")
    counters = [json.loads(_invoke(rt, fresh, "/c").result.body.data)["counter"] for _ in range(3)]
    assert counters == [1, 1, 1]
    warm = _spec(rt, js["web"], name="warm", reuse_instances=True)
    counters = [json.loads(_invoke(rt, warm, "/c").result.body.data)["counter"] for _ in range(3)]
    assert counters == [1, 2, 3]


def test_prewarmed_instances_serve_the_first_request_warm(rt, js):
    from dataclasses import replace

    spec = replace(_spec(rt, js["web"], name="prewarmed", reuse_instances=True), prewarm=2)
    assert rt.invoker.prewarm(spec) == 2
    done = _invoke(rt, spec, "/c")
    assert done.report.warm and done.report.init_duration_ms is None
    assert json.loads(done.result.body.data)["counter"] == 1  # a prewarmed instance had served nothing yet


# --- the same limits and typed errors as the other languages -------------------------------------------------


def test_an_infinite_loop_is_stopped_by_the_cpu_budget_and_the_runtime_serves_on(rt, js):
    spec = _spec(rt, js["hostile"], fuel=30_000_000)
    with pytest.raises(CpuBudgetExhausted) as info:
        _invoke(rt, spec, "/loop")
    assert info.value.report.fuel_used == 30_000_000 and "fuel" in str(info.value)
    assert _invoke(rt, spec, "/fine").result.status == 200


def test_an_infinite_loop_hits_the_wall_clock(rt, js):
    with pytest.raises(WallClockTimeout):
        _invoke(rt, _spec(rt, js["hostile"], fuel=10**15, timeout_ms=100), "/loop")


def test_a_memory_bomb_is_stopped_by_the_memory_cap(rt, js):
    spec = _spec(rt, js["hostile"], memory_mb=24, fuel=10**12)
    with pytest.raises(MemoryLimitExceeded) as info:
        _invoke(rt, spec, "/bomb")
    assert "memory_mb" in str(info.value) and "24 MB" in str(info.value)
    assert _invoke(rt, spec, "/fine").result.status == 200


def test_the_cap_holds_over_all_of_a_components_memories(js):
    layout = wasm_binary.memory_layout(js["hostile"])
    # QuickJS's heap, and a leftover build-time shim whose code cannot grow its memory
    assert layout.count == 2 and layout.growable == 1 and layout.fixed_bytes == 0
    assert layout.per_memory_bytes(32 << 20) == 32 << 20


def test_errors_and_bad_results_are_typed(rt, js, caplog):
    caplog.set_level(logging.INFO)
    spec = _spec(rt, js["hostile"], max_result_bytes=65536)
    with pytest.raises(FunctionError) as thrown:
        _invoke(rt, spec, "/throw")
    assert (thrown.value.guest_error_type, thrown.value.guest_error_message) == ("RangeError", "asked to throw")
    assert any("RangeError: asked to throw" in line for _, line in log_lines(caplog))
    with pytest.raises(FunctionError) as rejected:
        _invoke(rt, spec, "/reject")
    assert rejected.value.guest_error_type == "TypeError"
    with pytest.raises(FunctionError, match="never settled"):
        _invoke(rt, spec, "/never")
    with pytest.raises(FunctionError, match="returns a Request, a Response or nothing, not number"):
        _invoke(rt, spec, "/wrong")
    with pytest.raises(GuestTrap, match="stack_overflow"):  # as a C guest's deep recursion
        _invoke(rt, spec, "/recurse")
    with pytest.raises(InvalidResult, match="oversized"):
        _invoke(rt, spec, "/big")


# --- the build ------------------------------------------------------------------------------------------------


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    with pytest.raises(BuildError) as info:
        build_js(GUESTS_JS / "broken.ts", tmp_path / "broken.wasm")
    where = [(Path(d.file).name, d.line) for d in info.value.diagnostics]
    assert ("broken.ts", 2) in where


def test_the_build_is_cached_by_its_inputs(tmp_path):
    src = tmp_path / "fn.js"
    src.write_text("export function viewerRequest(r) { return r; }\n")
    key = build_key(src)
    first = build_js(src, tmp_path / "a.wasm")
    assert build_key(src) == key and build_js(src, tmp_path / "b.wasm") == first
    src.write_text("export function viewerRequest(r) { return new Response('changed'); }\n")
    assert build_key(src) != key


# --- the import check: before any compile, naming every refused import ----------------------------------------


def test_a_component_importing_what_is_not_granted_is_refused_before_a_compile(tmp_path):
    wat = """(component
      (import "wasi:http/types@0.2.3" (instance))
      (import "wasi:http/outgoing-handler@0.2.3" (instance))
      (import "edgefn:function/host@1.0.0" (instance))
    )"""
    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wasmtime.wat2wasm(wat))
        with pytest.raises(ComponentImportNotAllowed) as info:
            rt.store.load(digest, "starling")
        assert info.value.refused == ("wasi:http/types@0.2.3", "wasi:http/outgoing-handler@0.2.3")
        assert "imports wasi:http/types@0.2.3, wasi:http/outgoing-handler@0.2.3, which are not granted" in str(info.value)
        assert rt.store.stats.compiles == 0  # refused from the binary's import section, never compiled


def test_a_module_importing_what_is_not_granted_is_refused_before_a_compile(tmp_path):
    wat = """(module (import "env" "open" (func)) (import "edgefn:host/v1" "log" (func (param i32 i32 i32)))
      (import "sys" "socket" (func)) (memory (export "memory") 1))"""
    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wasmtime.wat2wasm(wat))
        with pytest.raises(ImportNotAllowed) as info:
            rt.store.load(digest, "sneaky")
        assert info.value.refused == ("env.open", "sys.socket") and rt.store.stats.compiles == 0


# --- outbound fetch and kv, through a real server --------------------------------------------------------------


@pytest.fixture(scope="module")
def outbound(tmp_path_factory):
    with guest_beside_origin(tmp_path_factory.mktemp("js-outbound"), GUESTS_JS / "outbound.js", "memory_mb = 32\nfuel = 100_000_000\n") as served:
        yield served


def test_fetch_reaches_allowed_hosts_only(outbound):
    server, origin = outbound
    ok = httpx.get(f"{server.base}/fetch", params={"url": f"{origin}/echo"}, timeout=30).json()
    assert ok["status"] == 200 and ok["type"] == "application/json"
    seen = json.loads(ok["body"])
    assert seen["method"] == "POST" and seen["body"] == "ping" and seen["headers"]["x-probe"] == "js"
    refused = httpx.get(f"{server.base}/fetch", params={"url": "http://127.0.0.2:9/"}, timeout=30)
    assert refused.status_code == 502 and "not in this function's allowed_hosts" in refused.json()["error"]


def test_kv_from_javascript(outbound):
    server, _ = outbound
    first = httpx.get(f"{server.base}/kv", timeout=30).json()
    second = httpx.get(f"{server.base}/kv", timeout=30).json()
    assert second["count"] == first["count"] + 1 and second["deleted"] is True and second["keys"] == ["count"]
    refused = httpx.get(f"{server.base}/kv", params={"ns": "private"}, timeout=30)
    assert refused.status_code == 500 and refused.json()["name"] == "KvError" and "not granted" in refused.json()["error"]
