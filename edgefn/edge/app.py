"""The Starlette app: reserved /_edgefn endpoints, and every other request through the edge pipeline."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Callable, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.app import ResolvedApp
from ..core.events import Body, EdgeRequest, Headers, title_case
from ..core.exceptions import EdgefnError
from ..core.ids import new_request_id
from .paths import BadPath, normalize_host, normalize_path
from .pipeline import VIA_PSEUDONYM, EdgePipeline, PipelineResult
from .rules import MAX_URI_AND_QUERY

RESERVED_PREFIX = "/_edgefn"
REQUEST_ID_HEADER = "x-edgefn-request-id"
EXECUTED_VERSION_HEADER = "x-edgefn-executed-version"
MAX_REQUEST_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MAX_HEADER_BYTES = 20 * 1024  # CloudFront's limit on all request headers together

access_log = logging.getLogger("edgefn.access")


def _edge_request(request: Request, path: str, body: bytes) -> EdgeRequest:
    # the normalised path (paths.normalize_path), never request.url: that is rebuilt from the Host header
    headers: Headers = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append((title_case(name), value))
    return EdgeRequest(
        method=request.method,
        uri=path,
        querystring=request.scope["query_string"].decode("latin-1"),
        headers=headers,
        client_ip=request.client.host if request.client else "",
        body=Body(body) if body else None,
    )


def _is_loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _framing_refusal(request: Request) -> tuple[int, str] | None:
    """RFC 9112 §6.1/§6.3: a request framed two ways (or with conflicting lengths) is refused, then the
    connection closed, so nothing after its body can be read as another request."""
    lengths = {part.strip() for k, v in request.scope["headers"] if k == b"content-length" for part in v.decode("latin-1").split(",")}
    has_te = any(k == b"transfer-encoding" for k, _ in request.scope["headers"])
    if has_te and lengths:
        return 400, "Bad Request: both Content-Length and Transfer-Encoding; send one"
    if len(lengths) > 1:
        return 400, "Bad Request: conflicting Content-Length values"
    if lengths and not next(iter(lengths)).isdigit():
        return 400, "Bad Request: Content-Length must be a decimal number"
    return None


def _hops(request: Request) -> int:
    """How many edgefn nodes this request has passed already (their entries in Via)."""
    return sum(1 for part in ",".join(request.headers.getlist("via")).split(",") if VIA_PSEUDONYM in part.split())


def _size_refusal(request: Request) -> tuple[int, str] | None:
    """Requests over the edge's size limits are refused before any function runs."""
    scope = request.scope
    if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 1 > MAX_URI_AND_QUERY:
        return 414, f"URI Too Long: the URI plus query string must be under {MAX_URI_AND_QUERY} bytes"
    if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
        return 431, f"Request Header Fields Too Large: at most {MAX_HEADER_BYTES} bytes of headers"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REQUEST_BODY:
        return 413, f"Content Too Large: the body may be at most {MAX_REQUEST_BODY} bytes"
    return None


async def _read_body(request: Request, idle_s: float, total_s: float) -> tuple[bytes, tuple[int, str] | None]:
    """The whole body, or a refusal: too large (413), or stalled (408: nothing for idle_s, or not whole in total_s)."""
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    give_up = loop.time() + total_s
    stream = request.stream().__aiter__()
    while True:
        wait = min(idle_s, give_up - loop.time())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(wait, 0.0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            which = f"no body bytes for {idle_s:g} s" if wait >= idle_s else f"the body not complete after {total_s:g} s"
            return b"", (408, f"Request Timeout: {which}")
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            return b"", (413, f"Content Too Large: the body may be at most {MAX_REQUEST_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks), None


class EdgeHost(Protocol):
    """What the edge app needs of the node it serves (edgefn/node.py's EdgeNode)."""

    #: the app being served, and its pipeline: swapped whole on a reload, so a request keeps the one it started on
    app: ResolvedApp
    pipeline: EdgePipeline

    def stats(self) -> dict[str, object]:
        """This process's limits and use (GET /_edgefn/info)."""
        ...


class DevView(Protocol):
    """`edgefn dev`'s state, as the edge app shows it: functions whose last save did not build."""

    broken: dict[str, EdgefnError]


class RequestConsole(Protocol):
    """`edgefn dev`'s terminal: one line per request."""

    def request(self, method: str, path: str, result: PipelineResult, total_ms: float) -> None: ...


class EdgeState:
    """The running node of one server process, and `edgefn dev`'s view when it runs one (set by the lifespan)."""

    def __init__(self) -> None:
        self.node: EdgeHost | None = None
        self.dev: DevView | None = None
        self.console: RequestConsole | None = None


def _build_error_page(broken: dict[str, EdgefnError], names: set[str]) -> Response:
    items = "".join(
        f"<h2>{html.escape(n)}</h2><pre>{html.escape(str(e))}</pre>" for n, e in sorted(broken.items()) if n in names
    )
    page = (
        "<!doctype html><meta charset=utf-8><title>edgefn: build failed</title>"
        "<style>body{font:15px system-ui;margin:2em;max-width:70em}pre{background:#fee;padding:1em;white-space:pre-wrap}</style>"
        f"<h1>Build failed</h1><p>This request uses a function whose last save did not build. API clients keep getting the "
        f"last good build; fix the error and save: the next good build is picked up by itself.</p>{items}"
    )
    return HTMLResponse(page, 500)


def create_edge_app(state: EdgeState, lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]]) -> Starlette:
    """The edge app of one server process: /_edgefn routes and every other request through `state.node`'s
    pipeline; `lifespan` (edgefn/node.py) sets `state` up before the first request and closes it after."""

    async def reserved_not_found(_: Request) -> Response:
        return Response(f"404 Not Found: {RESERVED_PREFIX}/ is reserved for edgefn\n", 404, media_type="text/plain")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> Response:
        assert state.node is not None
        if not _is_loopback(request):  # deployment and traffic details are for the operator, not for viewers
            return await reserved_not_found(request)
        app = state.node.app
        return JSONResponse(
            {
                "app": app.name,
                "functions": {n: {"digest": s.digest, "version": s.version} for n, s in app.functions.items()},
                "behaviors": [
                    {"path_pattern": b.path_pattern, "host_pattern": b.host_pattern, "target": b.function or b.origin, "hooks": {e: h.function for e, h in b.hooks.items()}}
                    for b in app.behaviors
                ],
                # this server process's limits and use, warm/cold invocations per "name:version" (docs/concurrency.md)
                **state.node.stats(),
            }
        )

    def refuse(request: Request, rid: str, status: int, text: str, close: bool = False) -> Response:
        access_log.info(json.dumps({"request_id": rid, "method": request.method, "path": request.scope["path"], "status": status, "refused": text}))
        headers = {REQUEST_ID_HEADER: rid, "content-type": "text/plain; charset=utf-8"}
        if close and request.scope.get("http_version", "1.1").startswith("1"):
            headers["connection"] = "close"  # the rest of this connection's bytes are not trusted
        return Response(f"{status} {text}\n", status, headers)

    async def edge(request: Request) -> Response:
        start = time.perf_counter()
        rid = new_request_id()
        assert state.node is not None
        server = state.node.app.server
        framing = _framing_refusal(request)
        if framing is not None:
            return refuse(request, rid, *framing, close=True)
        refusal = _size_refusal(request)
        if refusal is None and _hops(request) >= server.max_hops:
            refusal = 508, f"Loop Detected: this request has already passed {server.max_hops} edgefn nodes (Via)"
        try:
            path = normalize_path(request.scope.get("raw_path") or request.scope["path"].encode())
        except BadPath as exc:
            refusal = refusal or (400, f"Bad Request: {exc}")
        else:
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                return await reserved_not_found(request)
        if refusal is not None:
            return refuse(request, rid, *refusal)
        body, refusal = await _read_body(request, server.body_idle_timeout_ms / 1000, server.body_timeout_ms / 1000)
        if refusal is not None:
            return refuse(request, rid, *refusal, close=True)
        pipeline = state.node.pipeline  # this request finishes on this pipeline even if a reload swaps it
        host = normalize_host(request.headers.get("host", ""))
        if state.dev is not None and state.dev.broken and "text/html" in request.headers.get("accept", ""):
            behavior = pipeline.router.match(host, path)
            names = {n for n in (behavior.function, *(h.function for h in behavior.hooks.values())) if n} if behavior else set()
            if names & set(state.dev.broken):
                return _build_error_page(state.dev.broken, names)
        result = await pipeline.handle(_edge_request(request, path, body), host, rid)
        resp = result.response
        total_ms = (time.perf_counter() - start) * 1000
        raw = [(name.encode("latin-1"), v.encode("latin-1")) for name, entries in resp.headers.items() if name != "content-length" for _, v in entries]
        timing = ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in result.timings)
        raw.append((REQUEST_ID_HEADER.encode(), rid.encode()))
        raw.append((b"x-cache", result.cache_status.header_value.encode()))
        if result.reports:  # which version of each function ran (an alias may split between two)
            raw.append((EXECUTED_VERSION_HEADER.encode(), ", ".join(f"{r.function}:{r.version}" for r in result.reports).encode()))
        raw.append((b"server-timing", f"{timing + ', ' if timing else ''}total;dur={total_ms:.2f}".encode()))
        out: Response
        if result.stream is not None:
            out = StreamingResponse(result.stream, resp.status)
            out.raw_headers = [h for h in out.raw_headers if h[0] != b"content-type"] + raw
        else:
            out = Response(resp.body.data if resp.body else b"", resp.status)
            out.raw_headers = [h for h in out.raw_headers if h[0] == b"content-length"] + raw
        if state.console is not None:
            state.console.request(request.method, path, result, total_ms)
        access_log.info(
            json.dumps(
                {
                    "request_id": rid, "method": request.method, "path": path, "status": resp.status,
                    "behavior": result.behavior, "cache": result.cache_status, "duration_ms": round(total_ms, 3),
                    "timings_ms": {s: round(ms, 3) for s, ms in result.timings}, "functions": result.outcomes,
                }
            )
        )
        return out

    routes = [
        Route(f"{RESERVED_PREFIX}/health", health),
        Route(f"{RESERVED_PREFIX}/info", info),
        # the rest of /_edgefn is never a viewer path: scheduled events use it, so a viewer cannot pose as the scheduler
        Route(RESERVED_PREFIX + "/{rest:path}", reserved_not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        Route("/{path:path}", edge, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
