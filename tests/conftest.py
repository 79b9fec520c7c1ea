"""Shared fixtures: a real Runtime on a temp module store, WAT and C guests compiled for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import wasmtime

from edgefn.build.languages import build_source
from edgefn.build.toolchain import cache_dir
from edgefn.core.app import FunctionSpec, Limits
from edgefn.core.events import EdgeRequest, Event, EventConfig
from edgefn.core.loglines import record_lines
from edgefn.runtime.invoker import Runtime

REPO = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll `condition` every `poll_s` until it returns something true (returned), or fail after `timeout` s
    naming `what` (bench/fleet.py polls finer: it times what it waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_edgefn(
    *args: str, cwd: Path | None = None, timeout: float = 240, input: str | None = None, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`edgefn ARGS` as a user runs it: a subprocess (from the repository unless `cwd`), `input` on its stdin, `env` added to
    its environment, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout, input=input,
        env={**os.environ, **env} if env else None,
    )
GUESTS_C = REPO / "tests" / "guests" / "c"
os.environ.setdefault("EDGEFN_CACHE_DIR", str(REPO / ".cache"))

# A minimal ABI v1 guest in WAT. alloc places the event at 1024 (growing memory as needed);
# tests supply the body of edgefn_handle and any extra imports, globals, data or functions.
WAT_TEMPLATE = """
(module
  {imports}
  (memory (export "memory") {pages})
  {extra}
  (func (export "edgefn_abi_v1"))
  (func (export "edgefn_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub (i32.shr_u (i32.add (i32.add (i32.const 1024) (local.get $n)) (i32.const 65535)) (i32.const 16))
               (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (i32.const 1024))
  (func $handle (export "edgefn_handle") (param $ptr i32) (param $len i32) (result i64)
    {handle})
)
"""

# CBOR {"status": 200} at offset 16 (10 bytes)
OK_RESPONSE_DATA = r'(data (i32.const 16) "\a1\66status\18\c8")'
RETURN_OK = "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"
RETURN_INPUT = "(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, line) of every log line captured: an invocation writes START, END and REPORT as one record."""
    return [(r.levelno, line) for r in caplog.records for line in record_lines(r)]


def wat_guest(handle: str = RETURN_OK, extra: str = OK_RESPONSE_DATA, imports: str = "", pages: int = 1) -> bytes:
    return wasmtime.wat2wasm(WAT_TEMPLATE.format(handle=handle, extra=extra, imports=imports, pages=pages))


def make_event(event_type: str = "viewer-request", request_id: str = "req-test", **request: object) -> Event:
    req = EdgeRequest(method="GET", uri="/", querystring="", headers={"host": [("Host", "example.test")]}, client_ip="127.0.0.1")
    for key, value in request.items():
        setattr(req, key, value)
    return Event(EventConfig(event_type, request_id, "test"), req)  # type: ignore[arg-type]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(tmp_path / "store", workers=2) as rt:
        yield rt


@pytest.fixture
def deploy(runtime: Runtime) -> Callable[..., FunctionSpec]:
    """Put wasm bytes in the runtime's store and return a FunctionSpec with the given limits."""

    def _deploy(wasm: bytes, name: str = "guest", env: dict[str, str] | None = None, **limits: int) -> FunctionSpec:
        digest = runtime.store.add(wasm)
        return FunctionSpec(name=name, digest=digest, limits=Limits(**limits), env=env or {})

    return _deploy


@pytest.fixture(scope="session")
def c_guest(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], bytes]:
    """Compile tests/guests/c/NAME.c with the real toolchain (cached per session)."""
    out_dir = tmp_path_factory.mktemp("c-guests")
    built: dict[str, bytes] = {}

    def _build(name: str) -> bytes:
        if name not in built:
            src = GUESTS_C / f"{name}.c"
            built[name] = build_source(src, out_dir / f"{name}.wasm", "freestanding", cache_dir())
        return built[name]

    return _build


# --- the control database, on each engine ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A running PostgreSQL's URL (tests/services.py: never mocked, never skipped)."""
    from tests.services import postgres_url

    with postgres_url() as url:
        yield url


@pytest.fixture
def postgres_schema(postgres: str) -> Iterator[str]:
    """A URL of `postgres` whose search_path is a schema of this test's own (dropped afterwards)."""
    from tests.services import own_schema

    with own_schema(postgres) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def control_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    """Where a control plane lives, once on each engine: an SQLite file, a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield tmp_path / "control.db"
        return
    from tests.services import own_schema, postgres_url

    with postgres_url() as url, own_schema(url) as schema_url:
        yield schema_url


@pytest.fixture
def control_db(control_location: str | Path) -> Iterator[object]:
    """An open database.Database at `control_location` (one test's own), closed afterwards."""
    from edgefn.control.store.postgres import PostgresDatabase
    from edgefn.control.store.sqlite import SqliteDatabase

    db = PostgresDatabase(control_location) if isinstance(control_location, str) else SqliteDatabase(control_location)
    yield db
    db.close()
