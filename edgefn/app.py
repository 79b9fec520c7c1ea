"""The Starlette app: reserved /_edgefn endpoints, and every other request through the edge pipeline."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .commands import open_app
from .pipeline.pipeline import EdgePipeline
from .runtime.abi import Body, EdgeRequest, Headers, title_case

RESERVED_PREFIX = "/_edgefn"
REQUEST_ID_HEADER = "x-edgefn-request-id"
MAX_REQUEST_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit

access_log = logging.getLogger("edgefn.access")


def _edge_request(request: Request, body: bytes) -> EdgeRequest:
    headers: Headers = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append((title_case(name), value))
    return EdgeRequest(
        method=request.method,
        uri=request.url.path,
        querystring=request.url.query,
        headers=headers,
        client_ip=request.client.host if request.client else "",
        body=Body(body) if body else None,
    )


def create_app(config: Path, dev: bool = False) -> Starlette:
    state: dict[str, EdgePipeline] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        app, runtime = open_app(config)
        client = httpx.AsyncClient(http2=True, timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)
        state["pipeline"] = EdgePipeline(app, runtime.invoker, client, dev=dev)
        try:
            yield
        finally:
            await client.aclose()
            runtime.close()

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(_: Request) -> Response:
        app = state["pipeline"].app
        return JSONResponse(
            {
                "app": app.name,
                "functions": {n: {"digest": s.digest, "version": s.version} for n, s in app.functions.items()},
                "behaviors": [
                    {"path_pattern": b.path_pattern, "host_pattern": b.host_pattern, "target": b.function or b.origin, "hooks": {e: h.function for e, h in b.hooks.items()}}
                    for b in app.behaviors
                ],
            }
        )

    async def edge(request: Request) -> Response:
        start = time.perf_counter()
        rid = str(uuid.uuid4())
        body = await request.body()
        if len(body) > MAX_REQUEST_BODY:
            return Response(b"request body too large\n", 413, {REQUEST_ID_HEADER: rid})
        pipeline = state["pipeline"]
        result = await pipeline.handle(_edge_request(request, body), request.headers.get("host", ""), rid)
        resp = result.response
        out = Response(resp.body.data if resp.body else b"", resp.status)
        raw = out.raw_headers[:1] if resp.body else []  # keep Starlette's content-length
        for name, entries in resp.headers.items():
            if name == "content-length":
                continue
            raw.extend((name.encode("latin-1"), v.encode("latin-1")) for _, v in entries)
        total_ms = (time.perf_counter() - start) * 1000
        timing = ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in result.timings)
        raw.append((REQUEST_ID_HEADER.encode(), rid.encode()))
        raw.append((b"server-timing", f"{timing + ', ' if timing else ''}total;dur={total_ms:.2f}".encode()))
        out.raw_headers = raw
        access_log.info(
            json.dumps(
                {
                    "request_id": rid, "method": request.method, "path": request.url.path, "status": resp.status,
                    "behavior": result.behavior, "duration_ms": round(total_ms, 3),
                    "timings_ms": {s: round(ms, 3) for s, ms in result.timings}, "functions": result.outcomes,
                }
            )
        )
        return out

    routes = [
        Route(f"{RESERVED_PREFIX}/health", health),
        Route(f"{RESERVED_PREFIX}/info", info),
        Route("/{path:path}", edge, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def app_from_env() -> Starlette:
    """Entry point for Hypercorn worker processes: the parent passes the manifest in EDGEFN_CONFIG."""
    return create_app(Path(os.environ["EDGEFN_CONFIG"]), dev=os.environ.get("EDGEFN_DEV") == "1")
