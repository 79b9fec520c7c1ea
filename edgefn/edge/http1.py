"""The cleartext port on uvicorn + httptools (`[server] http1 = "uvicorn"`): the same app, a lighter HTTP layer.

Hypercorn (h11 in Python) serves every listener by default: HTTP/1.1 and h2c in cleartext, HTTP/1.1 and
HTTP/2 over TLS, HTTP/3 over QUIC. Its HTTP/1.1 costs several times the CPU of uvicorn's httptools (llhttp,
in C) per request (bench/results/bench.md), so a node may serve its cleartext port with uvicorn instead:
HTTP/1.1 only (no h2c), the same EdgeApp, the same pipeline, in the same event loop; TLS and QUIC stay on
Hypercorn. The parent `edgefn serve` holds the port (bound, never listening); each server process listens
on its own SO_REUSEPORT socket once its node has started, so the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import uvicorn

from ..core.exceptions import EdgefnError
from ..core.sockets import tcp_socket
from .app import EdgeApp

__all__ = ["HTTP1_BIND_ENV", "Http1Listener", "bind_from_env", "listen_socket"]

#: host:port of the cleartext port, from `edgefn serve` to its server processes when uvicorn serves it
HTTP1_BIND_ENV = "EDGEFN_HTTP1_BIND"

log = logging.getLogger("edgefn.server")

#: what a request's headers may take (as Hypercorn's h11 default), and how long an idle keep-alive lasts
MAX_INCOMPLETE_EVENT = 16 * 1024
KEEP_ALIVE_S = 5


def bind_from_env() -> tuple[str, int] | None:
    """The cleartext port `edgefn serve` holds for uvicorn (HTTP1_BIND_ENV), or None when Hypercorn serves it."""
    bind = os.environ.get(HTTP1_BIND_ENV)
    if not bind:
        return None
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def listen_socket(host: str, port: int) -> socket.socket:
    """This process's own listening socket on `host:port`, beside its siblings' (SO_REUSEPORT)."""
    try:
        return tcp_socket(host, port, reuse_port=True, backlog=1024)
    except OSError as exc:
        raise EdgefnError(f"cannot listen on tcp {host}:{port} for the uvicorn listener: {exc.strerror or exc}") from None


class Http1Listener:
    """uvicorn serving `app` on this process's socket for the cleartext port, until `stop()`."""

    def __init__(self, app: EdgeApp, host: str, port: int) -> None:
        self.host, self.port = host, port
        # proxy_headers off: uvicorn would take a loopback peer's X-Forwarded-For / -Proto as the client's address
        # and scheme; the edge decides what to trust ([server] trust_forwarded_for), as on Hypercorn
        config = uvicorn.Config(
            app, loop="none", http="httptools", lifespan="off", access_log=False, log_config=None, server_header=False, date_header=False,
            h11_max_incomplete_event_size=MAX_INCOMPLETE_EVENT, timeout_keep_alive=KEEP_ALIVE_S, proxy_headers=False,
        )
        config.load()
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Listen now (a failure fails the process's start), then serve in this event loop."""
        sock = listen_socket(self.host, self.port)
        self._task = asyncio.create_task(self._serve(sock), name="edgefn-http1")
        return self._task

    async def _serve(self, sock: socket.socket) -> None:
        # startup / main_loop / shutdown, not serve(): serve() would take over the process's signal handlers
        server = self._server
        server.lifespan = server.config.lifespan_class(server.config)  # "off": the node's lifespan is Hypercorn's
        await server.startup(sockets=[sock])
        log.info("HTTP/1.1 on uvicorn + httptools: http://%s:%d/", self.host, self.port)
        await server.main_loop()
        await server.shutdown(sockets=[sock])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=15)
