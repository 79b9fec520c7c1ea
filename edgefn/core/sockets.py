"""The node's listening sockets, made one way: TCP (listening now, or bound for later) and UDP (QUIC), and
served one way: every connection waiting on a listening socket is accepted at once (`BurstAcceptServer`)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

__all__ = ["BurstAcceptServer", "tcp_socket", "udp_socket"]

log = logging.getLogger("edgefn.server")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_socket(host: str, port: int, *, reuse_port: bool, backlog: int | None) -> socket.socket:
    """A non-blocking TCP socket bound to `host:port`, listening with `backlog` (None: bound only; asyncio's
    `start_server` listens, or it just holds the port). Raises OSError.

    IPPROTO_TCP and TCP_NODELAY: accepted connections get no Nagle delay (else ~40 ms delayed-ACK stalls)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A non-blocking UDP socket bound to `host:port`. Raises OSError."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


#: the most connections one readiness of a listening socket accepts (the stdlib loop's default backlog)
ACCEPT_BURST = 100
#: how long accepting pauses when the process is out of descriptors or memory (as the stdlib loop does)
ACCEPT_RETRY_S = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class BurstAcceptServer(asyncio.AbstractServer):
    """A listening socket whose waiting connections are all accepted when it turns readable, up to ACCEPT_BURST.

    libuv (uvloop's core) accepts one connection per loop iteration since 1.45; on a saturated loop an
    iteration runs every ready request, so the k-th connection of a burst waits k iterations for its first
    byte to be read (32 new connections at 19 ms per iteration: the last one's first request took 320 ms).
    The stdlib loop accepts up to its backlog at once, and so does this. Each accepted socket becomes a
    transport through the loop's own `connect_accepted_socket` (TLS included), so nothing else changes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 ssl: ssl_module.SSLContext | None = None, ssl_handshake_timeout: float | None = None) -> None:
        self._loop, self._sock, self._factory = loop, sock, protocol_factory
        self._tls: dict[str, Any] = {"ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout} if ssl is not None else {}
        self._serving = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed.is_set() else (self._sock,)

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if not self._serving and not self._closed.is_set():
            self._serving = True
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def serve_forever(self) -> None:
        await self.start_serving()
        await self._closed.wait()

    def close(self) -> None:
        """Stop accepting and close the listening socket; connections already accepted go on (as asyncio.Server)."""
        if self._closed.is_set():
            return
        if self._serving:
            self._loop.remove_reader(self._sock.fileno())
        self._serving = False
        self._sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while it waited: the next one
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # out of descriptors or memory: the waiting connections stay queued in the kernel until it passes
                log.warning("cannot accept connections on %s for %.0f s: %s", self._sock.getsockname(), ACCEPT_RETRY_S, exc.strerror or exc)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._open(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _open(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, **self._tls)
        except (OSError, ssl_module.SSLError, asyncio.TimeoutError) as exc:  # a TLS handshake that failed, a peer gone
            log.debug("connection from %s dropped before it started: %s", _peer(conn), exc)
            conn.close()


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername())
    except OSError:
        return "a closed socket"
