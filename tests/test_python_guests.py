"""Python edge functions end to end: the guest SDK, componentize-py builds, the component sandbox, warm pools.

Three components are built (cached by content hash in EDGEFN_CACHE_DIR) and precompiled once per session
into a shared module store: the hostile test guest (tests/guests/python/hostile.py) and the two Python
examples. Everything else runs on those: no test compiles a component on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import marshal
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cbor2
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefn.app_build import build_app
from edgefn.build.languages import build_source
from edgefn.build.python import build_key
from edgefn.build.toolchain import cache_dir
from edgefn.core import events
from edgefn.core.app import FunctionSpec, Limits
from edgefn.core.events import Body, EdgeRequest, EdgeResponse, Event, EventConfig
from edgefn.core.exceptions import (
    AbiMismatch,
    BuildError,
    CpuBudgetExhausted,
    EphemeralStorageLimitExceeded,
    FunctionError,
    InvalidModule,
    InvalidResult,
    InvocationError,
    ManifestError,
    MemoryLimitExceeded,
    WallClockTimeout,
)
from edgefn.manifest.load import load_manifest
from edgefn.runtime import abi
from edgefn.runtime.engine import EngineSettings
from edgefn.runtime.inline import InlinePolicy
from edgefn.runtime.invoker import Runtime
from edgefn.runtime.module_store import ModuleStore
from edgefn.runtime.wasm_binary import is_component, memory_min_bytes
from tests.conftest import GUESTS_C, REPO, log_lines, make_event
from tests.servers import edge_server
from tests.test_abi_roundtrip import requests

PY_GUESTS = REPO / "tests" / "guests" / "python"
EXAMPLES = REPO / "examples"
SDK = REPO / "guest-sdk" / "python"
HOSTILE = PY_GUESTS / "hostile.py"
AUTH = EXAMPLES / "python-auth" / "src" / "auth.py"
HEADERS = EXAMPLES / "python-headers" / "src" / "headers.py"
PY_LIMITS = dict(memory_mb=64, timeout_ms=5000, fuel=500_000_000)


# --- fixtures: build and precompile once per session -----------------------------------------------------


@pytest.fixture(scope="session")
def py_store_dir() -> Path:
    """A module store shared by every test of this file (and kept between runs: it is content-addressed)."""
    return cache_dir().parent / "python-test-store"


@pytest.fixture(scope="session")
def py_wasm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("py-guests")
    return {src.stem: build_source(src, out / f"{src.stem}.wasm", "freestanding", cache_dir()) for src in (HOSTILE, AUTH, HEADERS)}


@pytest.fixture(scope="session")
def digests(py_wasm: dict[str, bytes], py_store_dir: Path) -> dict[str, str]:
    """Every component added to the shared store and precompiled there (a disk load after the first run)."""
    with Runtime(py_store_dir) as rt:
        found = {name: rt.store.add(wasm) for name, wasm in py_wasm.items()}
        for name, digest in found.items():
            rt.store.load(digest, name)
    return found


@pytest.fixture
def rt(py_store_dir: Path, digests: dict[str, str]):
    with Runtime(py_store_dir, workers=2) as runtime:
        yield runtime


def hostile(digests: dict[str, str], name: str = "hostile", env: dict[str, str] | None = None, reuse: bool = False, prewarm: int = 0, **limits: int) -> FunctionSpec:
    return FunctionSpec(name, digests["hostile"], Limits(**{**PY_LIMITS, **limits}), env=env or {}, reuse_instances=reuse, prewarm=prewarm)


def get(path: str, request_id: str = "req-py", **request: object) -> Event:
    uri, _, query = path.partition("?")
    return make_event(request_id=request_id, uri=uri, querystring=query, **request)


def invoke(runtime: Runtime, fn: FunctionSpec, path: str, **request: object):
    return runtime.invoker.invoke_sync(fn, get(path, **request))


# --- the SDK on plain CPython (no build): objects, documents, errors ----------------------------------------


@pytest.fixture(params=["cbor", "marshal"])
def sdk(monkeypatch, request):
    """The guest SDK imported on the host, its host calls on the SDK's own LocalHost (edgefn_guest.testing);
    each test runs through `handle` (CBOR both ways) and `handle-marshal` (marshal both ways)."""
    monkeypatch.syspath_prepend(str(SDK))
    import edgefn_guest
    from edgefn_guest import Response, _runtime
    from edgefn_guest.testing import local_host

    def fetch(request):
        return Response(200, b"fetched", headers={"X-Url": request.uri})

    with local_host(env={"TOKEN": "t0k"}, fetch=fetch) as host:
        handle = _runtime.handle if request.param == "cbor" else _runtime.handle_marshal
        yield types.SimpleNamespace(sdk=edgefn_guest, runtime=_runtime, host=host, encoding=request.param, handle=handle)


def bind(sdk, source: str):
    module = types.ModuleType("fn_under_test")
    exec(textwrap.dedent(source), module.__dict__)
    sdk.runtime.bind(module)
    return module


def call_sdk(sdk, event: Event) -> bytes:
    """The raw result of one invocation through the fixture's export; a marshal result is a marshal dict."""
    raw = sdk.handle(abi.encode_event(event, sdk.encoding))
    assert (raw[:1] in (b"{", b"\xfb")) == (sdk.encoding == "marshal")
    return raw


def run_sdk(sdk, event: Event):
    return abi.decode_result(call_sdk(sdk, event), event, sdk.encoding)


def test_sdk_request_handlers_continue_change_or_answer(sdk):
    bind(sdk, '''
        from edgefn_guest import Response, env
        def viewer_request(request):
            if request.uri == "/same":
                return None
            if request.uri == "/deny":
                return Response(403, "no", headers={"Content-Type": "text/plain"})
            request.headers["X-Token"] = env("TOKEN")
            request.headers.add("set-cookie", "a=1")
            del request.headers["host"]
            request.uri = "/rewritten"
            return request
    ''')
    same = make_event(uri="/same")
    assert run_sdk(sdk, same) == same.request
    denied = run_sdk(sdk, make_event(uri="/deny"))
    assert isinstance(denied, EdgeResponse)
    assert (denied.status, denied.status_description, denied.body.data) == (403, "Forbidden", b"no")
    assert denied.headers == {"content-type": [("Content-Type", "text/plain")]}
    changed = run_sdk(sdk, make_event(uri="/x"))
    assert changed.uri == "/rewritten" and "host" not in changed.headers
    assert changed.headers["x-token"] == [("X-Token", "t0k")] and changed.headers["set-cookie"] == [("Set-Cookie", "a=1")]


def test_sdk_response_trigger_sends_back_only_what_changed(sdk):
    bind(sdk, '''
        def origin_response(response, request, context):
            response.headers["x-trigger"] = context.event_type
            if request.uri == "/new-body":
                response.body = "replaced"
            return response
        def viewer_response(response):
            return None
    ''')
    resp = EdgeResponse(404, "Not Found", {"server": [("Server", "o")]}, Body(b"x" * 5000))
    event = Event(EventConfig("origin-response", "r"), make_event().request, resp)
    raw = call_sdk(sdk, event)
    doc = cbor2.loads(raw) if sdk.encoding == "cbor" else marshal.loads(raw)
    assert "body" not in doc and "statusDescription" not in doc  # an unchanged 5 KB body never crosses back
    assert doc["headers"]["x-trigger"] == [{"key": "X-Trigger", "value": "origin-response"}]
    event.request.uri = "/new-body"
    assert run_sdk(sdk, event).body.data == b"replaced"
    viewer = Event(EventConfig("viewer-response", "r"), make_event().request, resp)
    assert run_sdk(sdk, viewer) == resp


def test_sdk_errors_are_result_documents(sdk):
    bind(sdk, '''
        CALLS = []
        def init():
            CALLS.append("init")
        def viewer_request(request):
            CALLS.append(request.uri)
            if request.uri == "/raise":
                raise KeyError("boom")
            if request.uri == "/oom":
                hog = [bytearray(10)]
                raise MemoryError()
            if request.uri == "/chained":
                try:
                    raise MemoryError()
                except MemoryError:
                    raise TypeError("a failure while out of memory")
            return 42
    ''')
    with pytest.raises(abi.GuestFunctionError) as info:
        run_sdk(sdk, make_event(uri="/raise"))
    assert info.value.error_type == "KeyError" and "boom" in info.value.error_message
    assert any(level == "error" and "Traceback" in line for level, line in sdk.host.logs)
    for uri in ("/oom", "/chained"):
        with pytest.raises(abi.GuestFunctionError) as info:
            run_sdk(sdk, make_event(uri=uri))
        assert info.value.error_type == "OutOfMemory"
    with pytest.raises(abi.GuestFunctionError) as info:
        run_sdk(sdk, make_event(uri="/wrong"))
    assert info.value.error_type == "EdgefnUsageError" and "int" in info.value.error_message
    with pytest.raises(abi.GuestFunctionError) as info:
        run_sdk(sdk, Event(EventConfig("origin-request", "r"), make_event().request))
    assert info.value.error_type == "EdgefnUsageError" and "no origin_request handler" in info.value.error_message
    with pytest.raises(abi.GuestFunctionError) as info:
        abi.decode_result(sdk.handle(b"\xff garbage"), make_event(), sdk.encoding)
    assert info.value.error_type == "InvalidEvent"
    module = sdk.runtime._bound.module
    assert module.CALLS.count("init") == 1  # once per instance, before its first request


def test_sdk_module_without_handler_is_refused(sdk):
    with pytest.raises(sdk.sdk.EdgefnUsageError, match="defines no handler"):
        bind(sdk, "X = 1")


def test_sdk_headers_and_fetch(sdk):
    Headers = sdk.sdk.Headers
    h = Headers({"Content-Type": "text/html", "set-cookie": ["a=1", "b=2"]})
    assert h["CONTENT-TYPE"] == "text/html" and h.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert h.items() == [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    h["content-type"] = "text/plain"
    assert h.items()[0] == ("Content-Type", "text/plain")
    with pytest.raises(sdk.sdk.EdgefnUsageError):
        h["bad name"] = "v"
    with pytest.raises(sdk.sdk.EdgefnUsageError):
        h["x-ok"] = "x\r\ny"
    resp = sdk.sdk.fetch("http://example.test/a", headers={"accept": "*/*"})
    assert (resp.status, resp.body, resp.headers["x-url"]) == (200, b"fetched", "http://example.test/a")


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.binary(max_size=300), st.text(max_size=60)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30,
))
def test_sdk_cbor_matches_cbor2(value):
    sys.path.insert(0, str(SDK))
    try:
        from edgefn_guest import _cbor
    finally:
        sys.path.remove(str(SDK))
    encoded = _cbor.dumps(value)
    assert cbor2.loads(encoded) == value
    assert _cbor.loads(cbor2.dumps(value)) == value


@pytest.mark.parametrize(("data", "why"), [
    (b"", "truncated"), (b"\x82\x01", "2 elements announced"), (b"\x7a\x00\x00\x00\x05ab", "needs 5 bytes"),
    (b"\x19\x01", "needs 2 bytes"), (b"\xf9\x00\x00", "float 25"), (b"\xc1\x00", "tags"), (b"\x01\x02", "trailing"),
    (b"\xa1\x80\x01", "got list"), (b"\xa1\xf5\x01", "got bool"), (b"\x5f", "indefinite"), (b"\x62\xff\xfe", "UTF-8"),
    (b"\xa1\x63ab", "needs 3 bytes"), (b"\x81" * 70 + b"\x00", "deeper than 64"),
])
def test_sdk_cbor_refuses_what_abi_v1_documents_never_hold(data, why):
    sys.path.insert(0, str(SDK))
    try:
        from edgefn_guest import _cbor
    finally:
        sys.path.remove(str(SDK))
    with pytest.raises(_cbor.CBORError, match=why):
        _cbor.loads(data)


# --- building --------------------------------------------------------------------------------------------------


def test_build_is_cached_by_content_hash(tmp_path, py_wasm, monkeypatch):
    import edgefn.build.python as pybuild

    assert is_component(py_wasm["hostile"][:8]) and not is_component(b"\0asm\x01\x00\x00\x00")
    calls = []
    monkeypatch.setattr(pybuild, "_componentize", lambda source, dest: calls.append(source))
    start = time.perf_counter()
    again = build_source(HOSTILE, tmp_path / "hostile.wasm", "freestanding", cache_dir())
    assert again == py_wasm["hostile"] and calls == []  # unchanged sources: no componentize-py run
    assert time.perf_counter() - start < 5
    # a changed input (here: a sibling module the function could import) means another key
    copy = tmp_path / "app"
    copy.mkdir()
    shutil.copy(HOSTILE, copy / "hostile.py")
    key = build_key(copy / "hostile.py")
    assert key == build_key(HOSTILE)
    (copy / "helper.py").write_text("X = 1\n")
    with_helper = build_key(copy / "hostile.py")
    assert with_helper != key
    (copy / "data.bin").write_bytes(b"not python")  # componentize-py bundles .py only: no new key
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"host bytecode")
    assert build_key(copy / "hostile.py") == with_helper


def test_build_error_names_file_and_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.py").write_text("from helper import thing\n\ndef viewer_request(request):\n    return request\n")
    (src / "helper.py").write_text("x = 1\nthing = 1 / 0\n")
    with pytest.raises(BuildError) as info:
        build_source(src / "broken.py", tmp_path / "broken.wasm", "freestanding", tmp_path / "cache" / "zig")
    diag = info.value.diagnostics[0]
    assert diag.file == str(src / "helper.py") and diag.line == 2 and "ZeroDivisionError" in diag.message
    assert f"{src / 'helper.py'}:2:" in str(info.value)


# --- the module store: components beside core modules ---------------------------------------------------------


def test_component_is_detected_precompiled_and_loaded_memory_mapped(py_store_dir, digests):
    with Runtime(py_store_dir) as rt:
        assert rt.store.kind_of(digests["hostile"]) == "component"
        start = time.perf_counter()
        loaded, fresh = rt.store.load(digests["hostile"], "hostile", compile_components=False)
        cold_ms = (time.perf_counter() - start) * 1000
        assert fresh and loaded.kind == "component" and loaded.source == "disk"
        assert (rt.store.stats.compiles, rt.store.stats.disk_loads) == (0, 1)
        assert loaded.info.memory_min_bytes == memory_min_bytes(rt.store.wasm_path(digests["hostile"]).read_bytes()) > 0
        assert cold_ms < 2000  # a load from the store, never a compile (which takes seconds)
        assert rt.store.component_artifact_path(digests["hostile"]).stat().st_size == loaded.artifact_bytes
        # the SDK's handle-marshal export: the event crosses as a marshal document, which CPython decodes in C
        assert loaded.info.encoding == "marshal"


def _copy_store(src_root: Path, dst_root: Path, digest: str) -> ModuleStore:
    with Runtime(dst_root) as rt:
        store = rt.store
        shutil.copy(Path(src_root) / "wasm" / f"{digest}.wasm", store.wasm_path(digest))
        fp = store.artifact_path(digest).parent.name
        for suffix in (".component.cwasm", ".component.meta"):
            shutil.copy(Path(src_root) / "artifacts" / fp / f"{digest}{suffix}", store.artifact_path(digest).parent / f"{digest}{suffix}")
    return store


def _flip_tail(path: Path) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(-64, os.SEEK_END)
        f.write(bytes(64))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the checksum can tell


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        pytest.param(lambda p, m: os.truncate(p, p.stat().st_size // 2), "truncated", id="truncated-payload"),
        pytest.param(lambda p, m: _flip_tail(p), "corrupted", id="corrupted-payload-same-mtime"),
        pytest.param(lambda p, m: m.write_bytes(b"NOTOURS!" + m.read_bytes()[8:]), "bad magic", id="bad-magic"),
        pytest.param(lambda p, m: m.write_bytes(m.read_bytes()[:20]), "sidecar", id="truncated-sidecar"),
        pytest.param(lambda p, m: p.unlink(), "missing", id="missing-payload"),
    ],
)
def test_damaged_component_artifact_is_detected_and_never_compiled_on_the_request_path(tmp_path, py_store_dir, digests, damage, problem, caplog):
    digest = digests["hostile"]
    with Runtime(tmp_path) as rt:
        _copy_store(py_store_dir, tmp_path, digest)
        payload, meta = rt.store.component_artifact_path(digest), rt.store.component_meta_path(digest)
        damage(payload, meta)
        with pytest.raises(InvalidModule, match="no usable precompiled artifact"):
            rt.store.load(digest, "hostile", compile_components=False)
        assert rt.store.stats.rebuilt_artifacts == 1 and rt.store.stats.compiles == 0
        assert problem in caplog.text and str(payload) in caplog.text


def test_copied_component_artifact_is_verified_once_then_trusted(tmp_path, py_store_dir, digests, monkeypatch):
    import edgefn.runtime.module_store as ms

    digest = digests["hostile"]
    _copy_store(py_store_dir, tmp_path, digest)  # a copy: new inode, so the first load hashes the payload
    hashed = []
    real = ms._file_sha256
    monkeypatch.setattr(ms, "_file_sha256", lambda p: hashed.append(p) or real(p))
    for _ in range(2):
        with Runtime(tmp_path) as rt:
            loaded, _ = rt.store.load(digest, "hostile", compile_components=False)
            assert loaded.source == "disk"
    assert len(hashed) == 1  # verified once, then trusted until the file is written to again


def test_foreign_engine_component_artifact_is_refused(tmp_path, py_store_dir, digests, caplog):
    digest = digests["hostile"]
    ours = _copy_store(py_store_dir, tmp_path / "ours", digest)
    with Runtime(tmp_path / "foreign", settings=EngineSettings(consume_fuel=False)) as foreign:
        shutil.copy(ours.wasm_path(digest), foreign.store.wasm_path(digest))
        for src, dst in ((ours.component_artifact_path(digest), foreign.store.component_artifact_path(digest)),
                         (ours.component_meta_path(digest), foreign.store.component_meta_path(digest))):
            shutil.copy(src, dst)
        with pytest.raises(InvalidModule):
            foreign.store.load(digest, "hostile", compile_components=False)
        assert "fingerprint differs" in caplog.text
        # even with a sidecar claiming the foreign engine, wasmtime's own check refuses the mapped payload
        import edgefn.runtime.module_store as ms

        fields = list(ms._COMPONENT_META.unpack(foreign.store.component_meta_path(digest).read_bytes()))
        fields[2] = bytes.fromhex(foreign.store.fingerprint)
        foreign.store.component_meta_path(digest).write_bytes(ms._COMPONENT_META.pack(*fields))
        with pytest.raises(InvalidModule):
            foreign.store.load(digest, "hostile", compile_components=False)
        assert "wasmtime refused it" in caplog.text


def test_component_importing_another_world_version_is_refused(tmp_path):
    # a tiny hand-written component that imports edgefn:function/host@2.0.0
    wat = """(component
      (import "edgefn:function/host@2.0.0" (instance (export "log" (func (param "m" string)))))
    )"""
    import wasmtime

    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wasmtime.wat2wasm(wat))
        with pytest.raises(AbiMismatch) as info:
            rt.store.load(digest, "future")
        assert info.value.guest_versions == [2]
        digest = rt.store.add(wasmtime.wat2wasm("(component)"))
        with pytest.raises(Exception) as missing:
            rt.store.load(digest, "empty")
        assert "handle" in str(missing.value)
        digest = rt.store.add(wasmtime.wat2wasm('(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))'))
        with pytest.raises(Exception, match="wasi:http/outgoing-handler@0.2.0, which is not granted"):
            rt.store.load(digest, "sneaky")


# --- limits: the same typed errors as a C guest ------------------------------------------------------------------


def test_python_infinite_loop_is_stopped_by_the_cpu_budget(rt, digests):
    with pytest.raises(CpuBudgetExhausted) as info:
        invoke(rt, hostile(digests, fuel=50_000_000), "/loop")
    assert info.value.report.fuel_used == 50_000_000
    assert invoke(rt, hostile(digests), "/count").result.status == 200


def test_python_infinite_loop_hits_the_wall_clock_timeout(rt, digests):
    with pytest.raises(WallClockTimeout) as info:
        invoke(rt, hostile(digests, fuel=10**15, timeout_ms=150), "/loop")
    assert info.value.timeout_ms == 150 and info.value.report.duration_ms >= 140


def test_python_memory_bomb_is_stopped_by_the_memory_cap(rt, digests):
    with pytest.raises(MemoryLimitExceeded) as info:
        invoke(rt, hostile(digests, memory_mb=48), "/bomb")
    assert info.value.memory_mb == 48 and "ran out of memory" in str(info.value)
    assert invoke(rt, hostile(digests), "/count").result.status == 200


def test_component_whose_initial_memory_exceeds_the_cap(rt, digests):
    with pytest.raises(MemoryLimitExceeded, match="pages at start"):
        invoke(rt, hostile(digests, memory_mb=4), "/count")


@pytest.mark.parametrize(
    ("c_guest", "path", "limits", "error"),
    [
        ("infinite_loop", "/loop", dict(fuel=20_000_000), CpuBudgetExhausted),
        ("infinite_loop", "/loop", dict(fuel=10**15, timeout_ms=100), WallClockTimeout),
        ("memory_bomb", "/bomb", dict(memory_mb=40), MemoryLimitExceeded),
    ],
)
def test_a_limit_hit_gives_the_same_typed_error_in_c_and_python(rt, digests, c_guest, path, limits, error, tmp_path):
    c = build_source(GUESTS_C / f"{c_guest}.c", tmp_path / f"{c_guest}.wasm", "freestanding", cache_dir())
    c_fn = FunctionSpec(c_guest, rt.store.add(c), Limits(**limits))
    errors = []
    for fn, p in ((c_fn, "/"), (hostile(digests, **limits), path)):
        with pytest.raises(InvocationError) as info:
            invoke(rt, fn, p)
        errors.append(info.value)
    assert [type(e) for e in errors] == [error, error]
    assert errors[0].kind == errors[1].kind and errors[0].report.outcome == errors[1].report.outcome


def test_a_blocking_wasi_call_is_timed_out_only_when_it_returns(rt, digests):
    """A known limit: epoch interruption stops wasm code, not a host call. A guest blocked in WASI (here
    time.sleep, a wasi:clocks poll) holds its worker thread until the call returns; the invocation is then
    stopped at once and reported as the timeout it is."""
    with pytest.raises(WallClockTimeout) as info:
        invoke(rt, hostile(digests, timeout_ms=100), "/sleep?s=0.5")
    assert info.value.report.duration_ms >= 450


def test_python_exception_is_a_function_error_with_its_traceback_logged(rt, digests, caplog):
    with caplog.at_level(logging.DEBUG, logger="edgefn.function.hostile"):
        with pytest.raises(FunctionError) as info:
            invoke(rt, hostile(digests), "/raise", request_id="r-raise")
    assert (info.value.error_type, info.value.error_message) == ("ValueError", "the guest failed on purpose")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("r-raise\tTraceback" in line for line in lines)
    assert any('hostile.py", line' in line for line in lines)


@pytest.mark.parametrize(
    ("path", "limits", "check"),
    [
        ("/recurse", {}, lambda e: isinstance(e, FunctionError) and e.error_type == "RecursionError"),
        ("/exit", {}, lambda e: isinstance(e, FunctionError) and e.error_type == "SystemExit"),
        ("/wrong", {}, lambda e: isinstance(e, FunctionError) and e.error_type == "EdgefnUsageError"),
        ("/big?n=5000", dict(max_result_bytes=1000), lambda e: isinstance(e, InvalidResult) and "oversized" in e.reason),
    ],
)
def test_other_python_failures_are_typed(rt, digests, path, limits, check):
    with pytest.raises(InvocationError) as info:
        invoke(rt, hostile(digests, **limits), path)
    assert check(info.value), info.value
    assert invoke(rt, hostile(digests), "/count").result.status == 200


# --- what a Python guest can reach ---------------------------------------------------------------------------


def test_env_is_the_manifest_env(rt, digests):
    result = invoke(rt, hostile(digests, env={"GREETING": "hola"}), "/env").result
    assert result.body.data == b"GREETING=hola\nMISSING=(unset)\n" and result.headers["x-greeting"] == [("X-Greeting", "hola")]


def test_a_warm_instance_reads_its_env_once_and_an_env_change_gets_new_instances(rt, digests):
    """The SDK remembers what env() returned in an instance (a host call costs more than a small handler);
    a function whose env changed runs on new instances, so it never sees an old value."""
    seen = []
    for greeting in ("hola", "hola", "ciao", "ciao"):
        done = invoke(rt, hostile(digests, env={"GREETING": greeting}, reuse=True), "/env")
        seen.append((done.result.headers["x-greeting"][0][1], done.report.warm))
    assert seen == [("hola", False), ("hola", True), ("ciao", False), ("ciao", True)]


def test_log_levels_stdout_stderr_and_caps(rt, digests, caplog):
    fn = hostile(digests)
    with caplog.at_level(logging.DEBUG, logger="edgefn.function.hostile"):
        invoke(rt, fn, "/log?long=10000", request_id="r1")
        invoke(rt, fn, "/log?flood=1000", request_id="r2")
    r1 = [(level, line) for level, line in log_lines(caplog) if line.startswith("r1\t")]
    for entry in [(logging.DEBUG, "r1\tdebug line"), (logging.INFO, "r1\tinfo line"), (logging.WARNING, "r1\twarn line"),
                  (logging.ERROR, "r1\terror line"), (logging.INFO, "r1\tprinted to stdout"), (logging.WARNING, "r1\tprinted to stderr")]:
        assert entry in r1
    assert max(len(m) for _, m in r1) == len("r1\t") + 4096  # lines are cut at 4 KiB
    r2 = [line for _, line in log_lines(caplog) if line.startswith("r2\t")]
    assert any("log lines dropped" in m for m in r2) and sum(len(m) - 3 for m in r2) < 70 * 1024


def test_no_filesystem_but_tmp_and_no_sockets(rt, digests):
    body = invoke(rt, hostile(digests), "/fs").result.body.data.decode()
    assert "read" not in body, body  # no preopened directory but /tmp: nothing else can be opened
    assert invoke(rt, hostile(digests), "/socket?port=9").result.body.data.startswith(b"refused")


# --- /tmp: a tmpfs of ephemeral_storage_mb per instance (runtime/scratch.TmpfsMounts) -----------------------


def tmp_op(runtime: Runtime, fn: FunctionSpec, query: str, request_id: str = "r-tmp") -> dict[str, str]:
    result = invoke(runtime, fn, f"/tmp?{query}", request_id=request_id).result
    assert isinstance(result, EdgeResponse) and result.status == 200, result
    return dict(line.split("=", 1) for line in result.body.data.decode().splitlines())


def instance_mounts(runtime: Runtime, expected: int) -> list[str]:
    """The instance mounts once there are `expected` of them: an unmount is sent without waiting for it."""
    mounts = runtime.sandbox.scratch_root.mounts
    assert mounts is not None and mounts.unavailable is None, "this host can make no tmpfs in a user namespace"
    deadline = time.monotonic() + 30
    while len(found := mounts.mounted()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def test_a_python_instance_has_its_own_tmp_kept_while_warm_and_gone_with_it(rt, digests):
    warm = hostile(digests, reuse=True)
    assert tmp_op(rt, warm, "op=write&kb=100") == {"written": str(100 * 1024), "errno": "0", "enospc": "0"}
    assert tmp_op(rt, warm, "op=size")["size"] == str(100 * 1024)  # the same instance: its /tmp is still there
    assert len(instance_mounts(rt, 1)) == 1
    fresh = hostile(digests)
    assert tmp_op(rt, fresh, "op=write&kb=8")["written"] == "8192"
    assert tmp_op(rt, fresh, "op=size")["size"] == "-1"  # a fresh instance per request: a new, empty /tmp each
    assert len(instance_mounts(rt, 1)) == 1  # the fresh instances' went with them; the warm one's stays
    rt.invoker.pools.close()  # the warm instance goes, and its /tmp with it
    assert instance_mounts(rt, 0) == []


def test_a_python_write_past_the_cap_is_enospc_and_named_in_the_report(rt, digests, caplog):
    fn = hostile(digests, ephemeral_storage_mb=1)
    with caplog.at_level(logging.INFO, logger="edgefn.function.hostile"):
        answer = tmp_op(rt, fn, "op=write&kb=2048", request_id="r-full")
    # the write that hit the cap failed: wasi-libc's ENOSPC (51), or the EIO (29) that componentize-py's wasi-libc
    # makes of a failed WASI 0.2 stream write
    assert int(answer["errno"]) in (51, 29) and 900 * 1024 <= int(answer["written"]) <= 1024 * 1024
    report = next(line for _, line in log_lines(caplog) if line.startswith("REPORT RequestId: r-full"))
    assert "Storage Error: EphemeralStorageLimitExceeded" in report and "/tmp's 1 MB" in report and "Outcome: ok" in report
    assert tmp_op(rt, fn, "op=write&kb=512")["errno"] == "0"  # the next (fresh) instance has its whole cap again


def test_a_python_guest_failing_after_filling_tmp_fails_with_the_typed_error(rt, digests):
    with pytest.raises(EphemeralStorageLimitExceeded) as info:
        invoke(rt, hostile(digests, ephemeral_storage_mb=2), "/tmp?op=fill-then-fail", request_id="r-fail")
    err = info.value
    assert (err.function, err.request_id, err.storage_mb, err.kind) == ("hostile", "r-fail", 2, "ephemeral_storage_limit_exceeded")
    assert "ephemeral_storage_mb" in str(err)
    assert instance_mounts(rt, 0) == []


def test_no_python_path_leaves_tmp(rt, digests):
    answer = tmp_op(rt, hostile(digests, reuse=True), "op=escape")
    assert answer == {
        "dotdot": "refused", "absolute": "refused", "abs-link": "refused", "rel-link": "refused", "up-dir": "refused", "mkdir-up": "refused",
    }
    root = rt.sandbox.scratch_root.path
    assert root is not None and not (root / "escaped").exists() and not (root / "mounts" / "escaped").exists()


@pytest.fixture
def local_origin():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"from the local origin"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_reaches_only_allowed_hosts(rt, digests, local_origin):
    url = f"http://{local_origin}/x"
    refused = invoke(rt, hostile(digests), f"/fetch?url={url}").result
    assert refused.status == 502 and b"not in this function's allowed_hosts" in refused.body.data
    allowed = FunctionSpec("hostile", digests["hostile"], Limits(**PY_LIMITS), allowed_hosts=(local_origin,))
    got = invoke(rt, allowed, f"/fetch?url={url}").result
    assert (got.status, got.body.data, got.headers["x-fetched-status"]) == (200, b"from the local origin", [("X-Fetched-Status", "200")])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_python_sdk_echoes_random_requests(rt, digests, request):
    request.uri = "/echo"
    result = rt.invoker.invoke_sync(hostile(digests), make_event(**vars(request))).result
    assert isinstance(result, EdgeResponse) and result.status == 200
    assert result.body == Body(request.body.data if request.body else b"")
    for name, entries in request.headers.items():
        assert [v for _, v in result.headers[f"x-echo-{name}"]] == [v for _, v in entries]


# --- execution-context reuse --------------------------------------------------------------------------------------


def counts(runtime: Runtime, fn: FunctionSpec, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        result = invoke(runtime, fn, "/count").result
        out.append((result.headers["x-count"][0][1], result.headers["x-inits"][0][1]))
    return out


def test_default_is_a_fresh_instance_per_request(rt, digests):
    assert counts(rt, hostile(digests), 3) == [("1", "1")] * 3


def test_reused_instance_keeps_module_state_and_runs_init_once(rt, digests, caplog):
    fn = hostile(digests, reuse=True)
    with caplog.at_level(logging.INFO, logger="edgefn.function.hostile"):
        assert counts(rt, fn, 3) == [("1", "1"), ("2", "1"), ("3", "1")]
    reports = [line for _, line in log_lines(caplog) if line.startswith("REPORT")]
    assert "Init Duration:" in reports[0] and all("Init Duration:" not in r for r in reports[1:])
    pool = rt.invoker.pools.get("hostile:$LATEST")
    assert pool is not None and pool.idle() == 1 and (pool.created, pool.reused) == (1, 2)


@pytest.mark.parametrize(
    ("path", "limits", "error"),
    [
        ("/raise", {}, FunctionError),
        ("/loop", dict(fuel=30_000_000), CpuBudgetExhausted),
        ("/wrong", {}, FunctionError),
    ],
)
def test_an_instance_that_failed_is_never_reused(rt, digests, path, limits, error):
    fn = hostile(digests, reuse=True, **limits)
    assert counts(rt, fn, 2) == [("1", "1"), ("2", "1")]
    with pytest.raises(error):
        invoke(rt, fn, path)
    assert counts(rt, fn, 2) == [("1", "1"), ("2", "1")]  # a new instance: the failed one was dropped


def test_fuel_and_deadline_are_reset_per_invocation(rt, digests):
    fn = hostile(digests, reuse=True, fuel=8_000_000, timeout_ms=1000)
    for _ in range(8):  # each request fits the budget; eight together would not
        done = invoke(rt, fn, "/count")
        assert done.report.fuel_used < 8_000_000
    assert int(done.result.headers["x-count"][0][1]) == 8


def test_a_warm_component_measured_short_runs_on_the_event_loop(rt, digests):
    """runtime/inline.py: a warm Python instance whose run on a guest thread was short is tried on the loop's own
    thread next, the same instance (its module state goes on); a fresh one is never tried there."""
    fn = hostile(digests, reuse=True)

    async def three() -> list[tuple[str, int]]:
        out = []
        for _ in range(3):
            done = await rt.invoker.invoke(fn, get("/count"))
            out.append((done.result.headers["x-count"][0][1], rt.invoker.inline.inline_runs))
        return out

    # cold on a thread, warm on a thread (now measured short), then warm on the loop
    assert asyncio.run(three()) == [("1", 0), ("2", 0), ("3", 1)]
    fresh = hostile(digests, name="hostile-fresh")
    for _ in range(3):
        asyncio.run(rt.invoker.invoke(fresh, get("/count")))
    assert rt.invoker.inline.inline_runs == 1  # never without an idle warm instance


def test_a_component_that_waits_in_the_host_inline_goes_back_to_the_threads(rt, digests, caplog):
    """A component's WASI can sleep where neither fuel nor the epoch reach: a try that held the loop past the
    slice's wall clock is a miss whatever its outcome, and each one doubles its function's cooldown."""
    fn = hostile(digests, reuse=True)
    # a 100 ms slice: a short try preempted on a busy machine is no wait; a 300 ms sleep is
    policy = rt.invoker.inline = InlinePolicy(slice_ms=100)

    async def call(path: str) -> str:
        return (await rt.invoker.invoke(fn, get(path))).result.body.data.decode()

    async def go() -> None:
        for _ in range(2):
            await call("/count")  # measured short, warm
        for wait in (1, 2):
            assert policy.cooldown_left(fn.name) == 0.0
            assert await call(f"/sleep?s={policy.slice_ms * 3 / 1000}") == "slept"  # it still answers
            assert policy.slice_misses == wait
            assert policy.cooldown_left(fn.name) > policy.cooldown_s * wait * 0.9  # 10 s, then 20 s
            runs = policy.inline_runs
            assert (await call("/count")).isdigit() and policy.inline_runs == runs  # on a thread meanwhile
            policy._long_until.pop(fn.name)  # the cooldown is over (not waited out: it is seconds long)
            await call("/count")  # on the loop again: the /count above, warm on a thread, measured it short

    with caplog.at_level(logging.INFO, logger="edgefn.function.hostile"):
        asyncio.run(go())
    reports = [line for _, line in log_lines(caplog) if line.startswith("REPORT")]
    assert len(reports) == 2 + 2 * 3  # a missed try is never reported: each request once


def test_memory_growing_across_reuses_hits_the_cap_and_the_instance_is_dropped(rt, digests):
    fn = hostile(digests, reuse=True, memory_mb=40)
    with pytest.raises(MemoryLimitExceeded):
        for _ in range(20):
            invoke(rt, fn, "/hoard")
    assert invoke(rt, fn, "/hoard").result.body.data == b"1"  # a fresh instance, its memory back to start


def test_pool_is_bounded_by_the_worker_threads(rt, digests):
    fn = hostile(digests, reuse=True)

    async def burst() -> None:
        await asyncio.gather(*(rt.invoker.invoke(fn, get("/count")) for _ in range(12)))

    asyncio.run(burst())
    pool = rt.invoker.pools.get("hostile:$LATEST")
    assert 1 <= pool.idle() <= rt.invoker.workers == 2
    assert pool.created + pool.reused == 12


def test_prewarm_creates_instances_at_startup(rt, digests, caplog):
    fn = hostile(digests, reuse=True, prewarm=2)
    assert rt.invoker.prewarm(fn) == 2
    with caplog.at_level(logging.INFO, logger="edgefn.function.hostile"):
        done = invoke(rt, fn, "/count")
    assert done.report.warm and done.report.init_duration_ms is None
    assert "Init Duration" not in next(line for _, line in log_lines(caplog) if line.startswith("REPORT"))
    assert rt.invoker.pools.get("hostile:$LATEST").created == 2 and rt.invoker.pools.get("hostile:$LATEST").reused == 1
    assert rt.invoker.prewarm(hostile(digests, reuse=True, prewarm=50)) == 2  # capped at the pool bound


def test_redeployed_function_gets_a_new_pool(rt, digests):
    fn = hostile(digests, reuse=True)
    assert counts(rt, fn, 2)[-1] == ("2", "1")
    changed = hostile(digests, reuse=True, env={"GREETING": "new"})  # new env: the old instances are stale
    assert counts(rt, changed, 1) == [("1", "1")]


def test_c_guests_can_reuse_instances_too(rt, tmp_path):
    wasm = build_source(GUESTS_C / "global_state.c", tmp_path / "g.wasm", "freestanding", cache_dir())
    fresh = FunctionSpec("counter", rt.store.add(wasm))
    reused = FunctionSpec("counter", fresh.digest, reuse_instances=True)
    read = lambda fn: rt.invoker.invoke_sync(fn, make_event()).result.headers["x-count"][0][1]  # noqa: E731
    assert [read(fresh) for _ in range(3)] == ["1", "1", "1"]
    assert [read(reused) for _ in range(3)] == ["1", "2", "3"]


def test_manifest_keys_and_prewarm_through_build_app(tmp_path):
    (tmp_path / "edgefn.toml").write_text(textwrap.dedent(f"""
        [functions.counter]
        source = "{GUESTS_C / 'global_state.c'}"
        reuse_instances = true
        prewarm = 2

        [default_behavior]
        function = "counter"
    """))
    manifest = load_manifest(tmp_path / "edgefn.toml")
    with Runtime(tmp_path / "store", workers=2) as rt:
        app = build_app(tmp_path / "edgefn.toml", manifest, rt.store, invoker=rt.invoker)
        spec = app.functions["counter"]
        assert (spec.reuse_instances, spec.prewarm) == (True, 2)
        assert rt.invoker.pools.get("counter:$LATEST").idle() == 2
    (tmp_path / "edgefn.toml").write_text('[functions.f]\nsource = "f.py"\nprewarm = 1\n\n[default_behavior]\nfunction = "f"\n')
    with pytest.raises(ManifestError, match="reuse_instances"):
        from edgefn.manifest.resolve import resolve

        resolve(load_manifest(tmp_path / "edgefn.toml"), tmp_path / "edgefn.toml", {"f": "00" * 32})
    (tmp_path / "edgefn.toml").write_text('[functions.f]\nsource = "f.rb"\n\n[default_behavior]\nfunction = "f"\n')
    with pytest.raises(ManifestError, match=r"\.py"):
        load_manifest(tmp_path / "edgefn.toml")


# --- the examples, through the same paths as the C ones -------------------------------------------------------


def run_example_events(rt: Runtime, example: str, function: str, digest: str) -> dict[str, object]:
    manifest = load_manifest(EXAMPLES / example / "edgefn.toml")
    cfg = manifest.functions[function]
    spec = FunctionSpec(function, digest, Limits(cfg.memory_mb, cfg.timeout_ms, cfg.fuel, cfg.max_result_bytes), env=dict(cfg.env),
                        reuse_instances=cfg.reuse_instances)
    out = {}
    for path in sorted((EXAMPLES / example / "events").glob("*.json")):
        event = events.event_from_document(json.loads(path.read_text()))
        out[path.stem] = rt.invoker.invoke_sync(spec, event).result
    return out


def test_python_auth_example_events(rt, digests, caplog):
    with caplog.at_level(logging.WARNING, logger="edgefn.function.auth"):
        out = run_example_events(rt, "python-auth", "auth", digests["auth"])
    valid = out["valid-token"]
    assert isinstance(valid, EdgeRequest) and "authorization" not in valid.headers and valid.headers["x-auth-user"] == [("X-Auth-User", "bearer")]
    post = out["post-valid-token"]
    assert isinstance(post, EdgeRequest) and post.body.data == b"\x00\x01\x02\xff"  # the body passes untouched
    for name, why in (("no-token", b"missing bearer token\n"), ("wrong-token", b"invalid bearer token\n")):
        assert (out[name].status, out[name].body.data) == (401, why)
        assert out[name].headers["www-authenticate"] == [("WWW-Authenticate", 'Bearer realm="edgefn"')]
    browser = out["browser-no-token"]
    assert browser.status == 302 and browser.headers["location"] == [("Location", "/login?next=%2Fdashboard%3Ftab%3D2")]
    assert isinstance(out["public"], EdgeRequest)
    assert any("auth: invalid bearer token" in r.getMessage() for r in caplog.records)


def test_python_headers_example_events(rt, digests):
    out = run_example_events(rt, "python-headers", "headers", digests["headers"])
    ok = out["origin-response-200"]
    assert ok.status == 200 and ok.body.data == b"<h1>Hello</h1>\n"
    assert "server" not in ok.headers and "x-powered-by" not in ok.headers
    assert ok.headers["x-frame-options"] == [("X-Frame-Options", "DENY")]
    assert ok.headers["cache-control"] == [("Cache-Control", "public, max-age=600")]
    assert out["origin-response-404"].headers["cache-control"] == [("Cache-Control", "no-store")]
    assert out["origin-response-cached"].headers["cache-control"] == [("Cache-Control", "public, max-age=31536000, immutable")]


def test_edgefn_invoke_runs_a_python_example(py_store_dir, digests):
    # the example's own store gets the session's precompiled artifacts (content-addressed, so a plain copy):
    # `edgefn invoke` then builds from the cache and loads from disk instead of compiling for 15 s again
    example_store = EXAMPLES / "python-auth" / ".edgefn" / "modules"
    with Runtime(example_store) as rt:
        if not rt.store.component_meta_path(digests["auth"]).exists():
            _copy_store(py_store_dir, example_store, digests["auth"])
    proc = subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "invoke", "auth", "--config", str(EXAMPLES / "python-auth" / "edgefn.toml"),
         "--event", str(EXAMPLES / "python-auth" / "events" / "wrong-token.json")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == 401
    assert "REPORT RequestId: evt-pyauth-wrong" in proc.stderr


@pytest.fixture(scope="module")
def python_server(tmp_path_factory, py_store_dir, digests):
    """One edge server with both Python examples (sharing the session's precompiled store)."""
    root = tmp_path_factory.mktemp("py-app")
    (root / "edgefn.toml").write_text(textwrap.dedent(f"""
        [app]
        name = "python-examples"
        store_dir = "{py_store_dir}"

        [functions.auth]
        source = "{AUTH}"
        memory_mb = 64
        fuel = 200_000_000
        env = {{ AUTH_TOKEN = "let-me-in" }}
        reuse_instances = true
        prewarm = 1

        [functions.headers]
        source = "{HEADERS}"
        memory_mb = 64
        fuel = 200_000_000

        [functions.page]
        source = "{EXAMPLES / 'auth' / 'src' / 'page.c'}"

        [[behaviors]]
        path_pattern = "/private/*"
        function = "page"
        viewer_request = {{ function = "auth" }}

        [default_behavior]
        function = "page"
        origin_response = {{ function = "headers" }}
    """))
    with edge_server(root / "edgefn.toml") as (base, log):
        yield base, log


def test_python_functions_behind_the_edge_server(python_server):
    base, log = python_server
    assert httpx.get(f"{base}/private/report").status_code == 401
    redirect = httpx.get(f"{base}/private/report?x=1", headers={"accept": "text/html"})
    assert redirect.status_code == 302 and redirect.headers["location"] == "/login?next=%2Fprivate%2Freport%3Fx%3D1"
    for _ in range(3):
        assert httpx.get(f"{base}/private/report", headers={"authorization": "Bearer let-me-in"}).status_code == 200
    page = httpx.get(f"{base}/index.html")
    assert page.status_code == 200 and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "public, max-age=300"
    reports = [line for line in log.read_text().splitlines() if "REPORT RequestId" in line and "Init Duration" not in line]
    assert reports  # prewarmed / reused instances: no Init Duration on their REPORT lines
