"""A closed-loop HTTP/3 load client on aioquic (+ uvloop): `concurrency` requests in flight on one QUIC connection.

    python bench/h3load.py https://127.0.0.1:PORT/ --concurrency 16 --seconds 3     # prints one JSON line

No compiled HTTP/3 load generator is installable here (Debian's h2load is built without QUIC; PyPI and npm
have none), so this one is Python: it is much slower than wrk and may bound the figures it reports. Its CPU
use is reported with them (bench/h3.py); a saturated client means the figure is a lower bound for the server.
The certificate is not verified (loopback, self-signed; the tests verify it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import time
from urllib.parse import urlsplit

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated


class _Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.pending: dict[int, list] = {}  # stream id -> [future, status]

    def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, ConnectionTerminated):
            for fut, _ in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(event.reason_phrase or str(event.error_code)))
        for ev in self.h3.handle_event(event):
            entry = self.pending.get(getattr(ev, "stream_id", -1))
            if entry is None:
                continue
            if isinstance(ev, HeadersReceived):
                entry[1] = next((int(v) for k, v in ev.headers if k == b":status"), 0)
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended and not entry[0].done():
                entry[0].set_result(entry[1])

    async def get(self, authority: str, path: str) -> int:
        sid = self._quic.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self.pending[sid] = [fut, 0]
        self.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()), (b":path", path.encode())], end_stream=True)
        self.transmit()
        try:
            return await fut
        finally:
            self.pending.pop(sid, None)


async def run(url: str, concurrency: int, seconds: float) -> dict:
    parts = urlsplit(url)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport, proto = await loop.create_datagram_endpoint(lambda: _Client(QuicConnection(configuration=config)), sock=sock)
    proto.connect((parts.hostname, parts.port))
    await proto.wait_connected()
    authority, path = parts.netloc, parts.path or "/"
    latencies: list[float] = []
    bad = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal bad
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await proto.get(authority, path)
            latencies.append((time.perf_counter() - t0) * 1e6)
            bad += status != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    proto.close()
    transport.close()
    latencies.sort()
    pct = {str(p): latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] for p in (1, 10, 25, 50, 75, 90, 99, 99.9, 100)}
    return {"requests": len(latencies), "seconds": wall, "rps": len(latencies) / wall, "bad_status": bad,
            "p50_us": pct["50"], "p99_us": pct["99"], "percentiles": pct}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(a.url, a.concurrency, a.seconds))
    else:
        result = uvloop.run(run(a.url, a.concurrency, a.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
