"""The admin/invoke listener: its own TCP socket, served by Hypercorn on the server process's event loop.

`edgefn serve` decides whether a listener runs (token policy, port probe) before it binds anything, and
hands the address to its server processes in the environment; each process's EdgeNode then binds it in
`start()`. With several worker processes every one binds the address with SO_REUSEPORT: the kernel
spreads admin connections over them, and as they share the registry any of them can answer any request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config, Sockets

from ..core.app import AdminSettings
from ..core.exceptions import AdminListenError, AdminTokenRequired, EdgefnError
from ..core.sockets import tcp_socket
from .app import NodeServices, create_admin_app

#: how `edgefn serve` tells its server processes where to listen (JSON of AdminBind)
BIND_ENV = "EDGEFN_ADMIN_BIND"
#: an admin request still running at shutdown gets this long (EdgeNode.close waits 5 s for its tasks)
GRACEFUL_TIMEOUT_S = 3.0

log = logging.getLogger("edgefn.admin")


@dataclass(frozen=True)
class AdminBind:
    """Where one server process listens for the admin API."""

    host: str
    port: int
    #: several worker processes share the port (SO_REUSEPORT)
    reuse_port: bool = False
    #: the environment variable holding the bearer token (read by each server process, never copied)
    token_env: str = "EDGEFN_ADMIN_TOKEN"
    #: else the owner-only file holding it (made by `edgefn serve` before its server processes start)
    token_file: str = ""
    #: served without a token (`--admin-no-token`; loopback only)
    no_token: bool = False

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "AdminBind | None":
        raw = os.environ.get(BIND_ENV)
        return cls(**json.loads(raw)) if raw else None

    @property
    def url(self) -> str:
        return f"http://{_addr(self.host, self.port)}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def read_token(token_env: str, token_file: Path | str) -> str | None:
    """The bearer token: $token_env if set, else the token file's content; None if neither has one."""
    token = os.environ.get(token_env) or None
    if token is None and token_file:
        try:
            token = Path(token_file).read_text().strip() or None
        except FileNotFoundError:
            return None
    return token


def ensure_token(admin: AdminSettings) -> tuple[str, Path | None]:
    """The token, generating it into admin.token_file (owner-only) on first start; returns (token, the file
    if it was just made, to print once)."""
    path = admin.token_file
    token = read_token(admin.token_env, path)
    if token is not None:
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a token others can read is no token
        return token, None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another `serve` made it first: use theirs
        return read_token(admin.token_env, path) or token, None
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token, path


def check_admin_auth(admin: AdminSettings, port: int | None, no_token: bool = False) -> None:
    """Raise AdminTokenRequired if the API would run on a non-loopback address without a token."""
    if (admin.port if port is None else port) != 0 and no_token and not is_loopback(admin.host):
        raise AdminTokenRequired(admin.host, admin.token_env)


def plan_admin(admin: AdminSettings, port: int | None, workers: int, dev: bool, no_token: bool = False) -> AdminBind | None:
    """What `edgefn serve` runs: None when the API is off; raises before anything binds when it may not run.

    The port is probed here so a taken port fails the start with a clear error; `edgefn dev` instead
    carries on without the admin API (two dev servers on one machine should not fail each other)."""
    port = admin.port if port is None else port
    if port == 0:
        return None
    check_admin_auth(admin, port, no_token)
    reuse = workers > 1
    if reuse and not hasattr(socket, "SO_REUSEPORT"):
        raise EdgefnError("several server processes need SO_REUSEPORT to share the admin port, which this OS lacks: use --workers 1 or admin.port = 0")
    try:
        bind_socket(admin.host, port, reuse_port=False).close()
    except AdminListenError as exc:
        if not dev:
            raise
        log.warning("edgefn dev: admin API off: %s", exc)
        return None
    return AdminBind(admin.host, port, reuse, admin.token_env, str(admin.token_file), no_token)


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket: connections queue from now on, before Hypercorn starts accepting."""
    try:
        return tcp_socket(host, port, reuse_port=reuse_port, backlog=128)
    except OSError as exc:
        raise AdminListenError(host, port, exc) from None


class _BoundConfig(Config):
    """Hypercorn's Config serving a socket bound beforehand."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def create_sockets(self) -> Sockets:
        return Sockets([], [self._sock], [])


class AdminListener:
    """The admin app of one server process, on its own socket, until the node stops."""

    def __init__(self, node: NodeServices, bind: AdminBind) -> None:
        self.bind = bind
        self.token = None if bind.no_token else read_token(bind.token_env, bind.token_file)
        if self.token is None and not bind.no_token:
            raise EdgefnError(f"the admin API has no token: ${bind.token_env} is unset and {bind.token_file} is missing (`edgefn serve` makes it)")
        self.app = create_admin_app(node, self.token)
        self._node = node

    def start(self) -> asyncio.Task[None]:
        """Bind now (a failure fails the server's start-up), then serve until the node's stop event."""
        sock = bind_socket(self.bind.host, self.bind.port, self.bind.reuse_port)
        config = _BoundConfig(sock)
        config.accesslog = None  # the admin app logs its own requests (edgefn.admin)
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = GRACEFUL_TIMEOUT_S
        auth = "bearer token" if self.token else "no token (--admin-no-token, loopback only)"
        log.debug("admin API on %s (%s) in worker %d", self.bind.url, auth, os.getpid())  # `serve` says it once
        return asyncio.create_task(hypercorn_serve(self.app, config, shutdown_trigger=self._node.stop_event.wait), name="edgefn-admin")  # type: ignore[arg-type]  # Starlette's ASGI signature is wider than Hypercorn's typed one


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
