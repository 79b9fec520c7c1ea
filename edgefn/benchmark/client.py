"""edgefn's built-in closed-loop HTTP/1.1 load generator, for machines without wrk (run by load.run_load).

    python -m edgefn.benchmark.client URL -c 16 -d 10 [-H 'Name: value']   # one LOAD_JSON line on stdout

Each connection sends its next request when the last response is whole (Content-Length or chunked), and
reconnects after a close or an error; latencies are kept per request and reported as LADDER's percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from .stats import ladder

__all__ = ["main"]



async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """One request and its whole response; (status, whether the server closes the connection)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float], counts: dict[str, int]) -> None:
    """One closed-loop connection until `deadline`, reconnecting after a close or an error (each counted)."""
    clock = time.perf_counter
    while clock() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError):
            counts["connect"] += 1
            continue
        try:
            while clock() < deadline:
                t0 = clock()
                status, close = await asyncio.wait_for(_exchange(reader, writer, request), 10)
                latencies.append((clock() - t0) * 1e6)
                if not 200 <= status < 400:
                    counts["non_2xx"] += 1
                if close:
                    break
        except asyncio.TimeoutError:
            counts["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            counts["read"] += 1
        finally:
            writer.close()


async def _builtin(url: str, connections: int, duration_s: float, headers: list[str]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not any(h.lower().startswith("host:") for h in headers):
        headers = [f"Host: {parts.netloc}", *headers]
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"GET {target} HTTP/1.1\r\nUser-Agent: edgefn-bench\r\n{extra}\r\n".encode("latin-1")
    latencies: list[float] = []
    counts = {"non_2xx": 0, "connect": 0, "read": 0, "timeout": 0}
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    await asyncio.gather(*(_connection(host, port, request, deadline, latencies, counts) for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    dist = ladder(latencies)
    return {
        "requests": len(latencies), "duration_us": round(elapsed * 1e6), "non_2xx": counts.pop("non_2xx"), "errors": counts,
        "latency": {"min": dist.get("0", 0.0), "max": dist.get("100", 0.0), "mean": sum(latencies) / len(latencies) if latencies else 0.0, "percentiles": dist},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgefn.benchmark.client", description="edgefn's built-in closed-loop HTTP/1.1 load generator")
    p.add_argument("url")
    p.add_argument("-c", "--connections", type=int, default=16)
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    a = p.parse_args(argv)
    try:
        import uvloop  # what `edgefn serve` runs on too: the client's CPU per request roughly halves

        doc = uvloop.run(_builtin(a.url, a.connections, a.duration, a.header))
    except ImportError:
        doc = asyncio.run(_builtin(a.url, a.connections, a.duration, a.header))
    print("LOAD_JSON " + json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
