"""A minimal HTTP/3 client on aioquic for the tests: one request per QUIC connection, certificate verified."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent


@dataclass
class H3Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "HTTP/3"
    alpn: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header (names are lowercase in HTTP/3)."""
        return next((v for k, v in self.headers if k == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class _Exchange:
    done: asyncio.Future
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class _H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.exchanges: dict[int, _Exchange] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            for ex in self.exchanges.values():
                if not ex.done.done():
                    ex.done.set_exception(ConnectionError(f"QUIC connection closed: {event.reason_phrase or event.error_code}"))
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        ex = self.exchanges.get(getattr(event, "stream_id", -1))
        if ex is None:
            return
        if isinstance(event, HeadersReceived):
            ex.headers.extend((k.decode(), v.decode()) for k, v in event.headers)
        elif isinstance(event, DataReceived):
            ex.body.extend(event.data)
        if getattr(event, "stream_ended", False) and not ex.done.done():
            ex.done.set_result(None)

    async def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Exchange:
        stream_id = self._quic.get_next_available_stream_id()
        ex = _Exchange(asyncio.get_running_loop().create_future())
        self.exchanges[stream_id] = ex
        pseudo = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()), (b":path", path.encode())]
        self.h3.send_headers(stream_id, pseudo + [(k.lower().encode(), v.encode()) for k, v in headers], end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        await ex.done
        return ex


async def h3_request(
    url: str,
    *,
    cafile: Path,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    server_name: str | None = None,
    timeout: float = 10.0,
) -> H3Response:
    """One HTTP/3 request to an https:// URL; the server certificate must verify against `cafile`."""
    return await asyncio.wait_for(_request(url, cafile, method, headers or [], body, server_name), timeout)


def h3_get(url: str, *, cafile: Path, timeout: float = 10.0, **kwargs) -> H3Response:  # type: ignore[no-untyped-def]
    return asyncio.run(h3_request(url, cafile=cafile, timeout=timeout, **kwargs))


async def _request(url: str, cafile: Path, method: str, headers: list[tuple[str, str]], body: bytes, server_name: str | None) -> H3Response:
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None or parts.port is None:
        raise ValueError(f"need an https://host:port/ URL, got {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name or parts.hostname)
    config.verify_mode = ssl.CERT_REQUIRED  # the default; stated because it is the point
    config.load_verify_locations(cafile=str(cafile))

    loop = asyncio.get_running_loop()
    family, _, _, _, addr = (await loop.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_DGRAM))[0]
    # like aioquic.asyncio.connect, but with a socket of the server's family (no dual-stack "::" socket, which
    # a CI runner without IPv6 cannot create)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
    transport, protocol = await loop.create_datagram_endpoint(lambda: _H3Protocol(QuicConnection(configuration=config)), sock=sock)
    assert isinstance(protocol, _H3Protocol)
    try:
        protocol.connect(addr)
        try:
            await protocol.wait_connected()
        except ConnectionError:
            closed = protocol._quic._close_event  # aioquic raises a bare ConnectionError; say why
            why = f"{closed.reason_phrase or 'closed'} (QUIC error {closed.error_code:#x})" if closed else "closed"
            raise ConnectionError(f"QUIC handshake with {parts.netloc} failed: {why}") from None
        authority = parts.netloc.rpartition("@")[2]
        ex = await protocol.request(method, authority, path, headers, body)
        alpn = protocol._quic.tls.alpn_negotiated
    finally:
        protocol.close()
        try:
            await asyncio.wait_for(protocol.wait_closed(), 2.0)
        except asyncio.TimeoutError:
            pass
        transport.close()
    status = int(next(v for k, v in ex.headers if k == ":status"))
    return H3Response(status, [(k, v) for k, v in ex.headers if not k.startswith(":")], bytes(ex.body), alpn=alpn)
