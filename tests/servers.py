"""Run a real `edgefn serve` (Hypercorn) on 127.0.0.1 in a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> tuple[int, int]:
    """(port, tls_port): a free TCP port, and a different one free for both TCP and UDP (TLS + QUIC) on 127.0.0.1."""
    with contextlib.ExitStack() as held:  # hold every candidate until the end, so the two always differ

        def bound(kind: int, port: int = 0) -> int:
            s = held.enter_context(socket.socket(socket.AF_INET, kind))
            s.bind(("127.0.0.1", port))
            return int(s.getsockname()[1])

        port = bound(socket.SOCK_STREAM)
        for _ in range(50):
            tls_port = bound(socket.SOCK_STREAM)
            try:
                bound(socket.SOCK_DGRAM, tls_port)
            except OSError:
                continue
            return port, tls_port
    raise RuntimeError("found no port free for both TCP and UDP")


@dataclass
class EdgeServer:
    """A running `edgefn serve`. Unpacks as `(base, log)`, the shape the older e2e tests use."""

    base: str  # http://127.0.0.1:<port> — cleartext HTTP/1.1 and h2c
    https: str | None  # https://127.0.0.1:<tls_port> — HTTP/1.1 + HTTP/2 over TLS, HTTP/3 over QUIC; None without TLS
    port: int
    tls_port: int  # 0 without TLS
    log: Path
    proc: subprocess.Popen
    stopped_in: float | None = None  # seconds from SIGTERM to exit, once the context has exited
    admin: str | None = None  # http://127.0.0.1:<admin_port> — the admin/invoke API (docs/admin-api.md)
    config: Path | None = None
    env: dict[str, str] | None = None

    @property
    def admin_token(self) -> str:
        """The admin API's bearer token: the one given in the environment, else the one `serve` generated."""
        given = (self.env or {}).get("EDGEFN_ADMIN_TOKEN")
        if given:
            return given
        assert self.config is not None
        return (self.config.parent / ".edgefn" / "admin-token").read_text().strip()

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def __iter__(self) -> Iterator[object]:
        return iter((self.base, self.log))

    @property
    def cafile(self) -> Path:
        """The certificate the server presents (self-signed by default), as printed at startup: trust it as a CA."""
        found = re.search(r"^edgefn: TLS .*?certificate (.+) \(SHA-256 ", self.log.read_text(), re.MULTILINE)
        if not found:
            raise AssertionError(f"no TLS certificate line in the server log:\n{self.log.read_text()}")
        return Path(found.group(1))


#: the examples' manifest, whose auth hooks read the secret AUTH_TOKEN (as `make run` puts it)
EXAMPLES_CONFIG = REPO / "examples" / "edgefn.toml"
EXAMPLE_TOKEN = "let-me-in"


def put_example_secrets() -> None:
    """What `make run` does before serving the examples: the demo AUTH_TOKEN of both auth hooks, put once."""
    from tests.conftest import run_edgefn

    for fn in ("auth", "py-auth"):
        put = run_edgefn("secret", "put", fn, "AUTH_TOKEN", "--if-missing", "--config", str(EXAMPLES_CONFIG), input=EXAMPLE_TOKEN + "\n", timeout=120)
        assert put.returncode == 0, put.stderr


@contextlib.contextmanager
def edge_server(
    config: Path, *extra: str, tls: bool = True, startup_timeout: float = 180.0, env: dict[str, str] | None = None,
    port: int | None = None, admin_port: int | None = None, edgefn: list[str] | None = None, cwd: Path | None = None,
    ready: bool = True,
) -> Iterator[EdgeServer]:
    """Serve `config` on free ports (cleartext, and TLS + QUIC unless tls=False); stop with SIGTERM afterwards.

    The server is up (its health endpoint answers) when this yields. `extra` goes to `edgefn serve` after
    --port/--tls-port/--admin-port; `env` is added to the server's environment (e.g. the admin token). Every
    server gets its own free admin port (manifests default to 8788, so concurrent servers would clash). A port
    taken by someone else between choosing and binding it is retried with new ones. `port` / `admin_port` fix
    those two (a manifest that must name them is written first), and are then not retried. `edgefn` is the
    command (default: this interpreter's `-m edgefn.cli`), run in `cwd` (default: the repository). `ready`
    False yields as soon as the server answers, while functions may still be building (health 503).
    """
    fixed_port, fixed_admin = port, admin_port
    for attempt in range(1 if fixed_port or fixed_admin else 3):
        port, tls_port = free_ports() if tls else (free_port(), 0)
        port = fixed_port or port
        admin_port = fixed_admin or free_port()
        while admin_port in (port, tls_port):
            admin_port = free_port()
        log = Path(tempfile.mkstemp(prefix="edgefn-server-", suffix=".log")[1])
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [
                    *(edgefn or [sys.executable, "-m", "edgefn.cli"]), "serve", "--config", str(config),
                    "--port", str(port), "--tls-port", str(tls_port), "--admin-port", str(admin_port), *extra,
                ],
                stdout=out, stderr=subprocess.STDOUT, cwd=cwd or REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,  # its own process group: nothing it started outlives the test (kill_group)
            )
        server = EdgeServer(f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}" if tls_port else None, port, tls_port, log, proc)
        server.admin = f"http://127.0.0.1:{admin_port}"
        server.config, server.env = Path(config), env
        try:
            if _wait_healthy(server, startup_timeout, retry_port_clash=attempt < 2 and not (fixed_port or fixed_admin), ready=ready):
                break
        except BaseException:
            _stop(server)
            raise
    try:
        yield server
    finally:
        _stop(server)


def _wait_healthy(server: EdgeServer, timeout: float, retry_port_clash: bool, ready: bool = True) -> bool:
    """True once the server answers; False if it lost a race for its ports (and may be retried); else raises."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            text = server.log.read_text()
            if retry_port_clash and "cannot listen on" in text:
                return False
            raise RuntimeError(f"edgefn serve exited with {server.proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{server.base}/_edgefn/health", timeout=1.0).status_code in ((200,) if ready else (200, 503)):
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"edgefn serve did not become healthy in {timeout} s:\n{server.log.read_text()}")
        time.sleep(0.1)


def _stop(server: EdgeServer) -> None:
    proc = server.proc
    if proc.poll() is None:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.stopped_in = time.monotonic() - start
    kill_group(server)


def kill_group(server: EdgeServer) -> None:
    """SIGKILL the server and everything in its process group (a node killed as a machine would lose it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=20)


@contextlib.contextmanager
def guest_beside_origin(tmp: Path, source: Path, settings: str = "") -> Iterator[tuple[EdgeServer, str]]:
    """`source` served as the default behavior's function `guest`, beside the real test origin (tests/origin_app.py),
    its one allowed host; kv namespace "data" granted and "private" declared only. `settings` are more manifest
    lines for the function, where {origin} is the origin's base URL. Yields (server, origin base URL)."""
    from tests.origin_app import origin_server

    shutil.copy(source, tmp / source.name)
    port = free_port()
    (tmp / "edgefn.toml").write_text(
        f'[app]\nname = "beside-origin"\n\n[kv]\nnamespaces = ["data", "private"]\n\n'
        f'[functions.guest]\nsource = "{source.name}"\nkv = ["data"]\nallowed_hosts = ["127.0.0.1:{port}"]\n'
        + settings.replace("{origin}", f"http://127.0.0.1:{port}") + '\n[default_behavior]\nfunction = "guest"\n'
    )
    with origin_server(port) as origin, edge_server(tmp / "edgefn.toml", tls=False) as server:
        yield server, origin


class Receiver:
    """An HTTP destination on 127.0.0.1: keeps every POSTed record by path, with when it arrived (perf_counter);
    answers 503 to /flaky-endpoint once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any], float]] = []
        self.refused = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                with lock:
                    if self.path == "/flaky-endpoint" and outer.refused == 0:
                        outer.refused += 1
                        self.send_response(503)
                    else:
                        outer.records.append((self.path, json.loads(body), time.perf_counter()))
                        self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        return [r for p, r, _ in list(self.records) if p == path]

    def arrivals(self, path: str) -> list[tuple[float, dict[str, Any]]]:
        """(perf_counter when it arrived, record) of each record POSTed to `path`."""
        return [(t, r) for p, r, t in list(self.records) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 (what an OpenTelemetry Collector offers): decodes each export with
    the OpenTelemetry protobuf types and keeps its spans as dicts (hex ids, name, kind, attributes, status)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[dict[str, Any]] = []
        self.exports = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with lock:
                    outer.exports += 1
                    for rs in request.resource_spans:
                        resource = {a.key: _otlp_value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                outer.spans.append({
                                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent_id": s.parent_span_id.hex(), "name": s.name,
                                    "kind": s.kind, "attributes": {a.key: _otlp_value(a.value) for a in s.attributes}, "status": s.status.code,
                                    "service": resource.get("service.name"), "start_ns": s.start_time_unix_nano, "end_ns": s.end_time_unix_nano,
                                })
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in list(self.spans) if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _otlp_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def batch_consumer_manifest(receiver: Receiver, app: str, sources: str) -> str:
    """An app whose function `consumer` (tests/guests/js/batch.js) POSTs every batch it gets to `receiver`'s /got,
    with `sources` (its [[event_sources]] tables) appended: the event-source tests' and bench's app."""
    port = receiver.url.rsplit(":", 1)[1]
    return f"""
[app]
name = "{app}"

[functions.consumer]
source = "{REPO / 'tests' / 'guests' / 'js' / 'batch.js'}"
memory_mb = 32
fuel = 500_000_000
env = {{ RECEIVER = "{receiver.url}/got" }}
allowed_hosts = ["127.0.0.1:{port}"]

[default_behavior]
function = "consumer"
{sources}
"""
