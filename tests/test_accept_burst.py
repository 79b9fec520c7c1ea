"""The server processes' event loop accepts every waiting connection at once (core/sockets.BurstAcceptServer).

libuv, under uvloop, accepts one connection per loop iteration; on a loop saturated with inline guests each
iteration is a full round of requests, so the k-th connection of a burst waited k rounds (bench/README.md,
target 8). Counted in loop iterations, not time: 32 queued connections take plain uvloop 33 iterations,
the stdlib loop and edgefn's 3. Real sockets on 127.0.0.1, the loop `edgefn serve` runs on, a real
`edgefn serve`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from edgefn.core.sockets import BurstAcceptServer, tcp_socket
from edgefn.server import EdgeLoopPolicy, new_event_loop
from edgefn.tls import ensure_self_signed
from tests.servers import REPO, edge_server

BURST = 32


class _Counted(asyncio.Protocol):
    def __init__(self, made: list[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


async def _iterations_until_all_made(sock: socket.socket, clients: list[socket.socket]) -> int:
    """Serve `sock` once `clients` are queued on it; count the loop iterations until every one is a connection."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []
    server = await loop.create_server(lambda: _Counted(made), sock=sock, start_serving=False)
    assert isinstance(server, BurstAcceptServer)
    for client in clients:
        client.connect(sock.getsockname())  # completed by the kernel: queued until the server accepts
    iterations = 0
    done = loop.create_future()

    def tick() -> None:  # one call per loop iteration
        nonlocal iterations
        iterations += 1
        if len(made) == len(clients) or iterations > 10 * len(clients):
            done.set_result(None)
        else:
            loop.call_soon(tick)

    await server.start_serving()
    loop.call_soon(tick)
    await asyncio.wait_for(done, 30)
    server.close()
    await server.wait_closed()
    for transport in made:
        transport.close()
    assert len(made) == len(clients)
    return iterations


def _clients(n: int) -> list[socket.socket]:
    return [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]


def test_a_burst_of_waiting_connections_is_accepted_in_a_few_loop_iterations_not_one_each() -> None:
    loop = new_event_loop()
    clients = _clients(BURST)
    try:
        sock = tcp_socket("127.0.0.1", 0, reuse_port=False, backlog=None)
        iterations = loop.run_until_complete(_iterations_until_all_made(sock, clients))
    finally:
        loop.close()
        for client in clients:
            client.close()
    # accept, open the transport (a task), connection_made (call_soon): a handful, whatever the burst's size
    assert iterations <= 6, iterations


def test_the_server_closes_its_listening_socket_and_refuses_new_connections() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = tcp_socket("127.0.0.1", 0, reuse_port=False, backlog=None)
        address = sock.getsockname()
        server = await loop.create_server(asyncio.Protocol, sock=sock)
        assert server.is_serving() and server.sockets == (sock,)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        assert not server.is_serving() and server.sockets == () and sock.fileno() == -1
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(*address), 10)

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_tls_connections_accepted_in_a_burst_complete_their_handshakes(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = tcp_socket("127.0.0.1", 0, reuse_port=False, backlog=None)
        address = sock.getsockname()

        def echo() -> asyncio.Protocol:
            class Echo(asyncio.Protocol):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    self.transport = transport

                def data_received(self, data: bytes) -> None:
                    self.transport.write(data)  # type: ignore[attr-defined]

            return Echo()

        server = await loop.create_server(echo, sock=sock, ssl=server_tls, ssl_handshake_timeout=10)

        async def one(i: int) -> bytes:
            reader, writer = await asyncio.open_connection(*address, ssl=client_tls, server_hostname="localhost")
            writer.write(b"ping %d" % i)
            data = await reader.readexactly(len(b"ping %d" % i))
            writer.close()
            return data

        answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(BURST))), 60)
        assert answers == [b"ping %d" % i for i in range(BURST)]
        server.close()
        await server.wait_closed()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_the_policy_makes_the_burst_accept_loop() -> None:
    loop = EdgeLoopPolicy().new_event_loop()
    try:
        sock = tcp_socket("127.0.0.1", 0, reuse_port=False, backlog=None)
        server = loop.run_until_complete(loop.create_server(asyncio.Protocol, sock=sock))
        assert isinstance(server, BurstAcceptServer)
        server.close()
    finally:
        loop.close()


MANIFEST = f"""
[app]
name = "accept-burst"

[server]
http1 = "{{http1}}"

[functions.hello]
source = "{REPO / 'examples' / 'hello' / 'src' / 'hello.c'}"

[default_behavior]
function = "hello"
"""


@pytest.mark.parametrize("http1", ["hypercorn", "uvicorn"])
def test_a_burst_of_new_connections_to_edgefn_serve_is_answered_on_every_one(tmp_path: Path, http1: str) -> None:
    config = tmp_path / "edgefn.toml"
    config.write_text(MANIFEST.format(http1=http1))

    async def burst(base: str) -> list[int]:
        async def one() -> int:
            async with httpx.AsyncClient(timeout=30) as client:  # a connection of its own
                return (await client.get(f"{base}/hi")).status_code

        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(BURST))), 120)

    with edge_server(config) as server:
        assert asyncio.run(burst(server.base)) == [200] * BURST
