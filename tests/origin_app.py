"""A real origin for end-to-end tests: a small Starlette app run under Hypercorn on 127.0.0.1.

It counts the requests each path receives (GET /_stats), so tests can tell hits from misses and see
coalescing, and it offers the cache-control, validator, Vary, slow and large responses the tests need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

hits: collections.Counter[str] = collections.Counter()


async def any_path(request: Request) -> Response:
    path = request.url.path
    hits[path] += 1
    q = request.query_params
    n = hits[path]
    headers = {"x-origin-count": str(n)}
    if "cc" in q:
        headers["cache-control"] = q["cc"]
    if "vary" in q:
        headers["vary"] = q["vary"]
    if "redirect" in q:
        return Response(status_code=302, headers={**headers, "location": q["redirect"]})
    if "tag" in q:  # surrogate keys, as Cloudflare (Cache-Tag) or Fastly (Surrogate-Key) origins send them
        headers["cache-tag"] = q["tag"]
    if "skey" in q:
        headers["surrogate-key"] = q["skey"]
    if "hop" in q:  # a response with hop-by-hop headers, one of them named by Connection: none may reach a viewer
        headers.update({"connection": "x-hop-secret", "x-hop-secret": "origin-only", "keep-alive": "timeout=5"})
    if "setcookie" in q:
        headers["set-cookie"] = f"session=s{n}; Path=/"
    if "expires_in" in q:
        from email.utils import formatdate

        headers["expires"] = formatdate(time.time() + int(q["expires_in"]), usegmt=True)
    if "etag" in q:
        headers["etag"] = f'"{q["etag"]}"'
        if request.headers.get("if-none-match") == headers["etag"]:
            hits[path + "#304"] += 1
            return Response(status_code=304, headers=headers)
    if "delay" in q:
        await asyncio.sleep(float(q["delay"]))
    if "size" in q:
        size, chunk = int(q["size"]), 64 * 1024

        async def body():
            sent = 0
            while sent < size:
                part = min(chunk, size - sent)
                yield b"x" * part
                sent += part
                await asyncio.sleep(0)

        return StreamingResponse(body(), headers={**headers, "content-type": "application/octet-stream"})
    status = int(q.get("status", "200"))
    payload = {
        "path": path,
        "query": str(request.url.query),
        "method": request.method,
        "count": n,
        "headers": {k: v for k, v in request.headers.items()},
        "body": (await request.body()).decode("utf-8", "replace"),
    }
    return JSONResponse(payload, status_code=status, headers=headers)


async def stats(_: Request) -> Response:
    return JSONResponse(dict(hits))


app = Starlette(routes=[Route("/_stats", stats), Route("/{path:path}", any_path, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])])


@contextlib.contextmanager
def origin_server(port: int) -> Iterator[str]:
    """Run this app under Hypercorn on 127.0.0.1:`port` in a subprocess; yield its base URL."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "tests.origin_app:app", "--bind", f"127.0.0.1:{port}"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(repo)),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/_stats", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the test origin did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def origin_stats(base: str) -> dict[str, int]:
    return json.loads(httpx.get(f"{base}/_stats").text)
