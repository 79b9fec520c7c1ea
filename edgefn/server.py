"""Hypercorn configuration and `edgefn serve`.

Listeners (see docs/tls.md):
  host:port      TCP, cleartext HTTP/1.1 and h2c
  host:tls_port  TCP, TLS with ALPN h2 / http/1.1            (tls_port != 0)
  host:tls_port  UDP, HTTP/3 over QUIC, advertised by Alt-Svc (tls_port != 0 and http3)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

from hypercorn.config import Config, Sockets
from hypercorn.run import run

from .admin.listener import BIND_ENV as ADMIN_BIND_ENV
from .admin.listener import ensure_token, plan_admin
from .app_build import LOCKED_APP_ENV, build_app, load_app, start_app_build, store_dir_of, write_locked_app
from .control.catalog import FunctionCatalog, LocalSnapshot, PendingBuilds
from .control.deploy import check_references, deploy, deploy_built
from .control.layers import fetch_manifest_layers
from .control.schedules import parse_schedules
from .control.store import open_control_store
from .core.app import ResolvedApp
from .core.exceptions import EdgefnError, ListenError, StorageError
from .core.sockets import BurstAcceptServer, tcp_socket, udp_socket
from .edge.app import EdgeApp
from .edge.http1 import HTTP1_BIND_ENV
from .manifest.load import load_manifest
from .manifest.resolve import admin_settings
from .node import NODE_ADDRESS_ENV
from .observability.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV, configure_server_logging
from .runtime.concurrency import check_reservations, reservations_of
from .runtime.egress import OWN_PORTS_ENV
from .runtime.invoker import Runtime
from .tls import fingerprint, tls_files

ALT_SVC_MAX_AGE = 86400


def hypercorn_config(
    host: str,
    port: int,
    workers: int,
    *,
    tls_port: int = 0,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    http3: bool = True,
    cleartext: bool = True,
) -> Config:
    """The Hypercorn config for these listeners; TLS (and so HTTP/3) only when tls_port and the files are given.
    `cleartext=False`: the cleartext port is not Hypercorn's (uvicorn serves it, edge/http1.py)."""
    config = EdgeConfig()
    config.application_path = "edgefn.server:worker_app()"
    # "asyncio" runs the loop of the installed policy, which worker_app sets: uvloop (~2x less event-loop CPU per
    # request) that accepts every waiting connection at once (core/sockets.BurstAcceptServer); Hypercorn's own
    # "uvloop" worker would accept one per loop iteration
    config.worker_class = "asyncio"
    config.workers = 0 if workers == 1 else workers  # 0: serve in this process
    config.graceful_timeout = 10.0
    config.accesslog = None  # edgefn writes its own structured access log
    # edge/app.py adds Date and Server only where a response has none: an origin's own are not doubled
    config.include_date_header = config.include_server_header = False
    config.errorlog = logging.getLogger("hypercorn.error")  # through edgefn's logging setup, once
    if tls_port and certfile and keyfile:
        # Hypercorn: `bind` is the TLS listener when certfile/keyfile are set, `insecure_bind` the cleartext one
        config.certfile, config.keyfile = str(certfile), str(keyfile)
        config.bind = [_addr(host, tls_port)]
        config.insecure_bind = [_addr(host, port)] if cleartext else []
        if http3:
            config.quic_bind = [_addr(host, tls_port)]
            # on every response, h1/h2/h3, cleartext or TLS: browsers act on it only for https:// origins
            config.alt_svc_headers = [f'h3=":{tls_port}"; ma={ALT_SVC_MAX_AGE}']
    else:
        config.bind = [_addr(host, port)] if cleartext else []  # without TLS, Hypercorn serves `bind` in cleartext
    return config


class _PerWorkerSockets:
    """Hypercorn's Sockets for worker processes: every worker binds its own SO_REUSEPORT sockets, TCP and UDP.

    One listening socket shared by all workers lets whichever worker wakes first accept, so keep-alive
    connections pile onto one of them (bench: 0.91x scaling for 2 workers); a datagram on a shared UDP
    socket goes to whichever worker reads it first, and QUIC connection state lives in one process. With a
    socket per worker the kernel spreads connections (and keeps each client address on one socket). The
    parent binds the addresses first (a taken port fails there, port 0 becomes a real one) and holds them
    without listening, so they receive nothing. A worker binds when Hypercorn first asks for its sockets,
    which is after the app has started: it joins the port's group only once it can answer.
    """

    def __init__(self, secure: list[str], insecure: list[str], quic_binds: list[str], held: list[socket.socket] | None = None) -> None:
        self.secure_binds, self.insecure_binds, self.quic_binds = secure, insecure, quic_binds
        self._held = held  # the parent's (bound, never listening); None in a worker
        self._tcp: tuple[list[socket.socket], list[socket.socket]] | None = None
        self._quic: list[socket.socket] | None = None

    def _tcp_sockets(self) -> tuple[list[socket.socket], list[socket.socket]]:
        if self._tcp is None:
            if self._held is not None:  # the parent: Hypercorn only closes these at exit
                n = len(self.secure_binds)
                self._tcp = (self._held[:n], self._held[n:])
            else:
                self._tcp = ([_tcp_socket(b) for b in self.secure_binds], [_tcp_socket(b) for b in self.insecure_binds])
                logging.getLogger("edgefn.server").info("worker %d listens on %s", os.getpid(), ", ".join(self.secure_binds + self.insecure_binds))
        return self._tcp

    @property
    def secure_sockets(self) -> list[socket.socket]:
        return self._tcp_sockets()[0]

    @property
    def insecure_sockets(self) -> list[socket.socket]:
        return self._tcp_sockets()[1]

    @property
    def quic_sockets(self) -> list[socket.socket]:
        if self._quic is None:
            if self._held is not None:
                self._quic = []
            else:
                self._quic = [_udp_socket(b, reuse_port=True) for b in self.quic_binds]
                _wake_quic_on_shutdown(self.secure_sockets + self.insecure_sockets, self._quic)
                # a worker joining the port's group re-spreads client addresses over the sockets: say when it did
                logging.getLogger("edgefn.server").info("worker %d serves HTTP/3 on %s", os.getpid(), ", ".join(self.quic_binds))
        return self._quic

    def __reduce__(self) -> tuple[type, tuple[list[str], list[str], list[str]]]:  # to a worker process: the addresses only
        return (_PerWorkerSockets, (self.secure_binds, self.insecure_binds, self.quic_binds))


class EdgeConfig(Config):
    """Hypercorn's Config, binding QUIC per worker process and failing with a clear error on a taken port."""

    def create_sockets(self) -> Sockets:
        per_worker = self.workers > 1 and hasattr(socket, "SO_REUSEPORT")
        per_worker_quic = per_worker and bool(self.quic_bind)
        quic_bind = self.quic_bind
        try:
            if per_worker:
                for bind in quic_bind:  # fail now, in the parent, if the UDP port is taken
                    _udp_socket(bind, reuse_port=False).close()
                self.quic_bind = []
                try:
                    base = super().create_sockets()  # bound with SO_REUSEPORT (workers > 1), never listening
                finally:
                    self.quic_bind = quic_bind
                held = base.secure_sockets + base.insecure_sockets
                sockets: Sockets = _PerWorkerSockets(  # type: ignore[assignment]  # duck-typed: Hypercorn reads the three socket lists
                    [_url_host(s) for s in base.secure_sockets], [_url_host(s) for s in base.insecure_sockets], list(quic_bind), held,
                )
            else:
                sockets = super().create_sockets()
                _wake_quic_on_shutdown(sockets.secure_sockets + sockets.insecure_sockets, sockets.quic_sockets)
        except OSError as exc:
            binds = ", ".join([*(f"tcp {b}" for b in self.bind + self.insecure_bind), *(f"udp {b}" for b in quic_bind)])
            raise EdgefnError(f"cannot listen on {binds}: {exc.strerror or exc} (see server.port / server.tls_port, --port / --tls-port)") from None
        _announce(sockets, quic_bind, per_worker_quic)
        return sockets


#: the longest chunk-size line accepted in a chunked request body: 7 hex digits (under 256 MiB, and a body
#: is at most 6 MiB anyway); h11 takes up to 20 digits (2^80 bytes), and such a chunk would never end
MAX_CHUNK_SIZE_DIGITS = 7


def harden_http1() -> None:
    """A chunk size no request body could have is a protocol error (Hypercorn answers 400 and closes)."""
    import h11._abnf
    import h11._readers

    pattern = h11._abnf.chunk_header.replace(h11._abnf.chunk_size, rf"[0-9A-Fa-f]{{1,{MAX_CHUNK_SIZE_DIGITS}}}", 1)
    h11._readers.chunk_header_re = re.compile(pattern.encode("ascii"))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The server processes' event loop: uvloop (about half the event-loop CPU per request of the stdlib loop)
    whose servers on a given socket accept in bursts (BurstAcceptServer); the stdlib loop where uvloop is absent."""
    try:
        loop_class = _burst_accept_loop_class()
    except ImportError:  # a platform without it (Windows): the stdlib loop, which accepts in bursts already
        return asyncio.DefaultEventLoopPolicy().new_event_loop()  # not the installed policy: that may be EdgeLoopPolicy
    return loop_class()


@functools.cache
def _burst_accept_loop_class() -> type[asyncio.AbstractEventLoop]:
    import uvloop

    class BurstAcceptLoop(uvloop.Loop):  # uvloop.Loop is a Python class over the Cython loop: it subclasses
        async def create_server(  # type: ignore[override]  # asyncio's overloads, and an AbstractServer, not a Server
                self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None, port: Any = None, *,
                sock: socket.socket | None = None, backlog: int = 100, ssl: ssl.SSLContext | None = None,
                ssl_handshake_timeout: float | None = None, start_serving: bool = True, **kwargs: Any) -> asyncio.AbstractServer:
            if sock is None or host is not None or port is not None or kwargs or sock.type != socket.SOCK_STREAM:
                return await super().create_server(protocol_factory, host, port, sock=sock, backlog=backlog, ssl=ssl,
                                                   ssl_handshake_timeout=ssl_handshake_timeout, start_serving=start_serving, **kwargs)
            sock.setblocking(False)
            sock.listen(backlog)
            server = BurstAcceptServer(self, sock, protocol_factory, ssl, ssl_handshake_timeout)
            if start_serving:
                await server.start_serving()
            return server

    return BurstAcceptLoop


class EdgeLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The asyncio policy of a server process: its new loops are `new_event_loop()`'s."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


def worker_app() -> EdgeApp:
    """The app of a server process (Hypercorn's application_path): logging as `serve` sets it up, then the app.

    With several workers Hypercorn spawns fresh interpreters, which would otherwise have no log handler and
    drop every access-log and REPORT line. Hypercorn loads the app before it makes the event loop, so the loop
    policy set here is the one its worker runs on (in this process, or in a spawned worker).
    """
    _configure_logging()
    harden_http1()
    asyncio.set_event_loop_policy(EdgeLoopPolicy())
    from .node import app_from_env

    return app_from_env()


def serve(
    config_path: Path,
    host: str | None = None,
    port: int | None = None,
    tls_port: int | None = None,
    workers: int | None = None,
    dev: bool = False,
    record: Path | None = None,
    admin_port: int | None = None,
    admin_no_token: bool = False,
) -> int:
    """Build the app, then serve it until SIGTERM/SIGINT; `dev`/`record` are for `edgefn dev` (see edgefn.app)."""
    _configure_logging(dev)
    config_path = config_path.resolve()
    manifest = load_manifest(config_path)
    server = manifest.server
    host = host or server.host
    port = server.port if port is None else port
    tls_port = server.tls_port if tls_port is None else tls_port
    workers = workers or server.workers
    # a taken port, or an admin API that may not run, fails the start before any build or deploy
    check_listeners(host, port, tls_port, server.http3)
    admin = plan_admin(admin_settings(manifest, config_path.parent), admin_port, workers, dev, admin_no_token)
    # build and precompile here, so workers start from a warm store and a broken build never serves: what is not
    # built within READY_WITHIN_S goes on in the background, each function deployed when ready (its $LATEST
    # answers 503 until then, and /_edgefn/health too); a failure there stops the server with status 2
    fetch_manifest_layers(config_path, manifest)
    runtime = Runtime(store_dir_of(config_path, manifest)).start()
    building: dict[str, Future[str]] = {}
    try:
        if dev:
            app = build_app(config_path, manifest, runtime.store, dev=runtime.sandbox)
        else:
            app, building = start_app_build(config_path, manifest, runtime.store, ready_within_s=READY_WITHIN_S)
            load_app(app, runtime.store)
    except BaseException:
        runtime.close()
        raise
    if not building:
        runtime.close()
    pending = PendingBuilds(app.pending_file)
    pending.write(sorted(building))
    control = open_control_store(app.control_location)
    registry = control.registry
    try:
        # the manifest wins only where it changed since its last deploy: what the API changed since stays (docs/fleet.md)
        changed = [name for name, moved in deploy(app, control, runtime.store.read_wasm, keep_api_changes=True).items() if moved]
    except StorageError as exc:
        changed = []
        _say(f"not deployed, the control plane is unreachable: {exc}")
    catalog = FunctionCatalog.from_snapshot(LocalSnapshot.of(app).read(registry))  # the last one this node kept while it is down
    control.close()
    check_references(app, catalog)
    parse_schedules(app.schedules, app.manifest_path)  # a bad expression fails here, before any port is bound
    check_reservations(server.max_concurrency, reservations_of(catalog.specs.values()))  # before any port is bound
    if changed:
        _say(f"deployed $LATEST of {', '.join(changed)} to {registry.location}")
    certfile = keyfile = None
    if tls_port:
        certfile, keyfile, self_signed = tls_files(config_path, server)
        kind = "self-signed localhost certificate" if self_signed else "certificate"
        _say(f"TLS {kind} {certfile} (SHA-256 {fingerprint(certfile)})")
    # the server processes serve this locked app (edgefn.node.app_from_env): no manifest re-read, no re-deploy
    os.environ[LOCKED_APP_ENV] = str(write_locked_app(app))
    if dev:
        os.environ["EDGEFN_DEV"] = "1"
    if record is not None:
        os.environ["EDGEFN_RECORD"] = str(Path(record).resolve())
    os.environ.pop(ADMIN_BIND_ENV, None)
    if admin is not None:
        os.environ[ADMIN_BIND_ENV] = admin.to_env()
        if admin.no_token:
            auth = "no token (--admin-no-token): loopback only"
        elif os.environ.get(admin.token_env):
            auth = f"bearer token from ${admin.token_env}"
        else:
            token, made = ensure_token(app.admin)
            auth = f"bearer token in {admin.token_file} (`edgefn admin token` prints it)"
            if made is not None:  # shown this once; afterwards it is only in the owner-only file
                _say(f"admin token generated (shown once, kept owner-only in {made}): {token}")
        _say(f"admin API on {admin.url} ({auth})")
    # guests may never reach the node's own listeners (runtime/egress.py)
    own = [port, tls_port, admin.port if admin is not None else 0]
    if server.http1 == "uvicorn":  # the cleartext port on uvicorn: held here, listened on by every server process
        held = _hold_port(host, port)
        port = held.getsockname()[1]
        own[0] = port
        os.environ[HTTP1_BIND_ENV] = _addr(host, port)
        _say(f"listening on http://{_addr(host, port)}/ (HTTP/1.1 on uvicorn + httptools)")
    else:
        os.environ.pop(HTTP1_BIND_ENV, None)
    os.environ[OWN_PORTS_ENV] = ",".join(str(p) for p in own if p)
    os.environ[NODE_ADDRESS_ENV] = _addr(host, port)
    if building:
        _say(f"serving {app.name} ({len(app.functions)} functions ready; still building {', '.join(sorted(building))}: "
             "they answer 503 with Retry-After until each is deployed)")
    else:
        _say(f"serving {app.name} ({len(app.functions)} functions)")
    failed: list[BaseException] = []
    if building:
        threading.Thread(target=_finish_builds, args=(app, building, runtime, pending, failed), name="edgefn-pending-builds", daemon=True).start()
    config = hypercorn_config(
        host, port, workers, tls_port=tls_port, certfile=certfile, keyfile=keyfile, http3=server.http3, cleartext=server.http1 == "hypercorn",
    )
    code = run(config)
    if failed:
        raise failed[0]  # the build that stopped the server: the CLI says what it was, with status 2
    return code


#: how long `serve` waits for every function before it listens with the rest still building (a first build
#: of a Python function takes tens of seconds; C, cached builds and precompiled code take far less)
READY_WITHIN_S = 5.0


def _finish_builds(app: ResolvedApp, building: dict[str, Future[str]], runtime: Runtime, pending: PendingBuilds, failed: list[BaseException]) -> None:
    """Deploy each function still building once its code is built and precompiled; the first failure stops the
    server (SIGTERM to itself: the graceful shutdown), and `serve` then raises it."""
    control = open_control_store(app.control_location)
    names = {future: name for name, future in building.items()}
    left = set(building)
    try:
        for future in as_completed(names):
            name = names[future]
            try:
                deploy_built(app, control, name, future.result(), runtime.store.read_wasm)
            except BaseException as exc:  # noqa: BLE001 - whatever it was, it is said once and ends the server
                failed.append(exc)
                logging.getLogger("edgefn.server").error("%s could not be built, the server stops: %s", name, exc)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            left.discard(name)
            pending.write(sorted(left))
            _say(f"{name} is built and deployed: all of {app.name} is served" if not left else f"{name} is built and deployed")
    finally:
        runtime.close()
        control.close()


def check_listeners(host: str, port: int, tls_port: int, http3: bool) -> None:
    """Raise ListenError if a port the server will listen on is taken (probed and released at once)."""
    tls = "server.host / server.tls_port, --tls-port"
    probes = [("tcp", port, False, "server.host / server.port, --port"), ("tcp (TLS)", tls_port, False, tls), ("udp (HTTP/3)", tls_port if http3 else 0, True, tls)]
    for what, number, udp, settings in probes:
        if number:
            try:
                (udp_socket(host, number, reuse_port=False) if udp else tcp_socket(host, number, reuse_port=False, backlog=None)).close()
            except OSError as exc:
                raise ListenError(what, host, number, exc, settings) from None


def _hold_port(host: str, port: int) -> socket.socket:
    """Bind the port (SO_REUSEPORT, never listening: it receives nothing) so a taken port fails here and port 0
    becomes a real one; the server processes listen beside it (edge/http1.py)."""
    try:
        sock = tcp_socket(host, port, reuse_port=True, backlog=None)
    except OSError as exc:
        raise ListenError("tcp", host, port, exc) from None
    _HELD.append(sock)
    return sock


#: ports the parent holds for the life of the process
_HELD: list[socket.socket] = []


# --- helpers ------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    """A start-up line for the operator: "edgefn: ..." on the terminal, or with --log-format json a log
    record like every other line; -q (a level above info) leaves it out."""
    level = os.environ.get(LOG_LEVEL_ENV, "info")
    if level in ("warning", "error"):
        return
    if os.environ.get(LOG_FORMAT_ENV) == "json":
        logging.getLogger("edgefn.server").info("%s", message)
    else:
        print(f"edgefn: {message}", file=sys.stderr, flush=True)


def _configure_logging(dev: bool = False) -> None:
    configure_server_logging(dev=dev or os.environ.get("EDGEFN_DEV") == "1")


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _split(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def _url_host(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def _announce(sockets: Sockets, quic_bind: list[str], per_worker_quic: bool) -> None:
    lines = [f"http://{_url_host(s)}/ (HTTP/1.1, h2c)" for s in sockets.insecure_sockets]
    lines += [f"https://{_url_host(s)}/ (HTTP/1.1, HTTP/2)" for s in sockets.secure_sockets]
    quic = list(quic_bind) if per_worker_quic else [_url_host(s) for s in sockets.quic_sockets]
    lines += [f"HTTP/3 on udp/{q.rpartition(':')[2]} ({q})" for q in quic]
    for line in lines:
        _say(f"listening on {line}")


def _tcp_socket(bind: str) -> socket.socket:
    """A worker's own TCP socket on `bind` (a concrete address the parent bound); Hypercorn listens on it."""
    return tcp_socket(*_split(bind), reuse_port=True, backlog=None)


def _udp_socket(bind: str, reuse_port: bool) -> socket.socket:
    return udp_socket(*_split(bind), reuse_port=reuse_port)


def _wake_quic_on_shutdown(tcp: list[socket.socket], quic: list[socket.socket]) -> None:
    """Wake Hypercorn's QUIC loop at shutdown, so an idle server stops at once rather than after graceful_timeout.

    Hypercorn 0.18's UDP server checks for shutdown only after handling a datagram. At shutdown it closes the
    TCP listeners first; a watcher thread sees that and sends empty datagrams (ignored as not QUIC) to the
    QUIC socket until the process exits. With per-worker SO_REUSEPORT sockets a datagram may land on a sibling
    worker — all of them are shutting down together — so each one keeps sending, from fresh source ports.
    """
    if not tcp or not quic:
        return
    targets = []
    for q in quic:
        host, port = q.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if q.family == socket.AF_INET else "::1"
        targets.append((q.family, host, port))

    def watch() -> None:
        while all(s.fileno() != -1 for s in tcp):
            time.sleep(0.1)
        while True:  # until the process exits: the loop also stops only once its last connection has drained
            for family, host, port in targets:
                try:
                    with socket.socket(family, socket.SOCK_DGRAM) as s:
                        s.sendto(b"", (host, port))
                except OSError:
                    pass
            time.sleep(0.05)

    threading.Thread(target=watch, name="edgefn-quic-shutdown", daemon=True).start()
