"""The ASGI app of a server process: every viewer request through the edge pipeline, the reserved /_edgefn
endpoints (and the lifespan) on Starlette."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
import time
from contextlib import AbstractAsyncContextManager
from email.utils import formatdate
from typing import Awaitable, Callable, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ..core.app import FunctionSpec, ResolvedApp
from ..core.events import Body, EdgeRequest, Headers, title_case
from ..core.exceptions import EdgefnError
from ..core.ids import new_request_id
from ..core.loglines import log_lines
from ..core.tracing import TRACEPARENT, TraceContext
from .paths import BadPath, normalize_host, normalize_path
from .pipeline import VIA_PSEUDONYM, EdgePipeline, PipelineResult
from .rules import MAX_URI_AND_QUERY

RESERVED_PREFIX = "/_edgefn"
REQUEST_ID_HEADER = "x-edgefn-request-id"
EXECUTED_VERSION_HEADER = "x-edgefn-executed-version"
MAX_REQUEST_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MAX_HEADER_BYTES = 20 * 1024  # CloudFront's limit on all request headers together

access_log = logging.getLogger("edgefn.access")
log = logging.getLogger("edgefn.edge")


def _headers_of(scope: Scope) -> Headers:
    """The request's headers as an event keeps them: lowercase name -> [(Title-Case name, value)]."""
    headers: Headers = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        headers.setdefault(name, []).append((title_case(name), raw_value.decode("latin-1")))
    return headers


def _first(headers: Headers, name: str) -> str:
    entries = headers.get(name)
    return entries[0][1] if entries else ""


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _is_loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _framing_refusal(scope: Scope) -> tuple[int, str] | None:
    """RFC 9112 §6.1/§6.3: a request framed two ways (or with conflicting lengths) is refused, then the
    connection closed, so nothing after its body can be read as another request."""
    lengths = {part.strip() for k, v in scope["headers"] if k == b"content-length" for part in v.decode("latin-1").split(",")}
    has_te = any(k == b"transfer-encoding" for k, _ in scope["headers"])
    if has_te and lengths:
        return 400, "Bad Request: both Content-Length and Transfer-Encoding; send one"
    if len(lengths) > 1:
        return 400, "Bad Request: conflicting Content-Length values"
    if lengths and not next(iter(lengths)).isdigit():
        return 400, "Bad Request: Content-Length must be a decimal number"
    return None


def _hops(headers: Headers) -> int:
    """How many edgefn nodes this request has passed already (their entries in Via)."""
    via = ",".join(value for _, value in headers.get("via", ()))
    return sum(1 for part in via.split(",") if VIA_PSEUDONYM in part.split()) if via else 0


def _size_refusal(scope: Scope, headers: Headers) -> tuple[int, str] | None:
    """Requests over the edge's size limits are refused before any function runs."""
    if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 1 > MAX_URI_AND_QUERY:
        return 414, f"URI Too Long: the URI plus query string must be under {MAX_URI_AND_QUERY} bytes"
    if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
        return 431, f"Request Header Fields Too Large: at most {MAX_HEADER_BYTES} bytes of headers"
    length = _first(headers, "content-length")
    if length.isdigit() and int(length) > MAX_REQUEST_BODY:
        return 413, f"Content Too Large: the body may be at most {MAX_REQUEST_BODY} bytes"
    return None


async def _read_body(receive: Receive, headers: Headers, idle_s: float, total_s: float) -> tuple[bytes, tuple[int, str] | None]:
    """The whole body, or a refusal: too large (413), or stalled (408: nothing for idle_s, or not whole in total_s).

    A request that declares no body (no Content-Length above 0, no Transfer-Encoding) is not read at all."""
    if "transfer-encoding" not in headers and _first(headers, "content-length") in ("", "0"):
        return b"", None
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    give_up = loop.time() + total_s
    while True:
        wait = min(idle_s, give_up - loop.time())
        try:
            message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
        except asyncio.TimeoutError:
            which = f"no body bytes for {idle_s:g} s" if wait >= idle_s else f"the body not complete after {total_s:g} s"
            return b"", (408, f"Request Timeout: {which}")
        if message["type"] == "http.disconnect":
            return b"", (400, "Bad Request: the client went away before its body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            return b"", (413, f"Content Too Large: the body may be at most {MAX_REQUEST_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


_text = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str


def _object(items: dict[str, str] | dict[str, float]) -> str:
    return "{" + ", ".join(f"{_text(k)}: {_text(v) if isinstance(v, str) else float.__repr__(v)}" for k, v in items.items()) + "}"


def access_line(
    rid: str, method: str, path: str, status: int, behavior: str, cache: str, duration_ms: float, timings_ms: dict[str, float],
    functions: dict[str, str], trace_id: str | None,
) -> str:
    """A request's access-log line: the JSON object json.dumps writes for these fields, in this order, byte for
    byte (tests/test_access_line.py), built without it (json.dumps of the dict was ~7 µs of every request)."""
    return (
        f'{{"request_id": {_text(rid)}, "method": {_text(method)}, "path": {_text(path)}, "status": {int(status)}, '
        f'"behavior": {_text(behavior)}, "cache": {_text(cache)}, "duration_ms": {float.__repr__(duration_ms)}, '
        f'"timings_ms": {_object(timings_ms)}, "functions": {_object(functions)}, "trace_id": {"null" if trace_id is None else _text(trace_id)}}}'
    )


class EdgeHost(Protocol):
    """What the edge app needs of the node it serves (edgefn/node.py's EdgeNode)."""

    #: the app being served, and its pipeline: swapped whole on a reload, so a request keeps the one it started on
    app: ResolvedApp
    pipeline: EdgePipeline

    def stats(self) -> dict[str, object]:
        """This process's limits and use (GET /_edgefn/info)."""
        ...

    def building(self) -> list[str]:
        """Functions whose code is still building (`serve` listens before slow builds end)."""
        ...

    def serving(self) -> dict[str, FunctionSpec]:
        """Each function's $LATEST as this process serves it now (those built after the start too)."""
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


#: the error page asks this (GET, dev only) every half second, and reloads itself once its functions build
DEV_BUILDS_PATH = RESERVED_PREFIX + "/dev/builds"

_REFRESH_SCRIPT = """<script>
const names = %s;
(async function poll() {
  try {
    const r = await fetch("%s", {cache: "no-store"});
    const broken = (await r.json()).broken;
    if (!names.some(n => broken.includes(n))) { location.reload(); return; }
  } catch (e) { /* the server is restarting: ask again */ }
  setTimeout(poll, 500);
})();
</script>"""


def _build_error_page(broken: dict[str, EdgefnError], names: set[str]) -> Response:
    items = "".join(
        f"<h2>{html.escape(n)}</h2><pre>{html.escape(str(e))}</pre>" for n, e in sorted(broken.items()) if n in names
    )
    page = (
        "<!doctype html><meta charset=utf-8><title>edgefn: build failed</title>"
        "<style>body{font:15px system-ui;margin:2em;max-width:70em}pre{background:#fee;padding:1em;white-space:pre-wrap}</style>"
        f"<h1>Build failed</h1><p>This request uses a function whose last save did not build. API clients keep getting the "
        f"last good build. Fix the error and save: this page reloads itself once it builds.</p>{items}"
        + _REFRESH_SCRIPT % (json.dumps(sorted(names)), DEV_BUILDS_PATH)
    )
    return HTMLResponse(page, 500, headers={"cache-control": "no-store"})


def create_edge_app(state: EdgeState, lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]]) -> "EdgeApp":
    """The edge app of one server process: /_edgefn routes and every other request through `state.node`'s
    pipeline; `lifespan` (edgefn/node.py) sets `state` up before the first request and closes it after."""

    async def reserved_not_found(_: Request) -> Response:
        return Response(f"404 Not Found: {RESERVED_PREFIX}/ is reserved for edgefn\n", 404, media_type="text/plain")

    async def health(_: Request) -> Response:
        building = state.node.building() if state.node is not None else []
        if building:  # ready for what is built; a load balancer waits for all of it
            return JSONResponse({"status": "starting", "building": building}, 503, headers={"retry-after": "2"})
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> Response:
        assert state.node is not None
        if not _is_loopback(request):  # deployment and traffic details are for the operator, not for viewers
            return await reserved_not_found(request)
        app = state.node.app
        return JSONResponse(
            {
                "app": app.name,
                "functions": {n: {"digest": s.digest, "version": s.version} for n, s in state.node.serving().items()},
                "behaviors": [
                    {"path_pattern": b.path_pattern, "host_pattern": b.host_pattern, "target": b.function or b.origin, "hooks": {e: h.function for e, h in b.hooks.items()}}
                    for b in app.behaviors
                ],
                # this server process's limits and use, warm/cold invocations per "name:version" (docs/concurrency.md)
                **state.node.stats(),
            }
        )

    async def dev_builds(request: Request) -> Response:
        if state.dev is None or not _is_loopback(request):  # `edgefn dev` only, and for the developer's own browser
            return await reserved_not_found(request)
        return JSONResponse({"broken": sorted(state.dev.broken)}, headers={"cache-control": "no-store"})

    def refuse(scope: Scope, rid: str, status: int, text: str, close: bool = False) -> Response:
        log_lines(access_log, (json.dumps({"request_id": rid, "method": scope["method"], "path": scope["path"], "status": status, "refused": text}),))
        headers = {REQUEST_ID_HEADER: rid, "content-type": "text/plain; charset=utf-8"}
        if close and scope.get("http_version", "1.1").startswith("1"):
            headers["connection"] = "close"  # the rest of this connection's bytes are not trusted
        return Response(f"{status} {text}\n", status, headers)

    async def edge(scope: Scope, receive: Receive, send: Send) -> None:
        """Every viewer request: straight on the ASGI scope (no Request, no router, no middleware on this path)."""
        start = time.perf_counter()
        rid = new_request_id()
        assert state.node is not None
        server = state.node.app.server
        framing = _framing_refusal(scope)
        if framing is not None:
            return await refuse(scope, rid, *framing, close=True)(scope, receive, send)
        headers = _headers_of(scope)
        refusal = _size_refusal(scope, headers)
        if refusal is None and _hops(headers) >= server.max_hops:
            refusal = 508, f"Loop Detected: this request has already passed {server.max_hops} edgefn nodes (Via)"
        try:
            path = normalize_path(scope.get("raw_path") or scope["path"].encode())
        except BadPath as exc:
            refusal = refusal or (400, f"Bad Request: {exc}")
        else:
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                return await (await reserved_not_found(Request(scope)))(scope, receive, send)
        if refusal is not None:
            return await refuse(scope, rid, *refusal)(scope, receive, send)
        body, refusal = await _read_body(receive, headers, server.body_idle_timeout_ms / 1000, server.body_timeout_ms / 1000)
        if refusal is not None:
            return await refuse(scope, rid, *refusal, close=True)(scope, receive, send)
        pipeline = state.node.pipeline  # this request finishes on this pipeline even if a reload swaps it
        host = normalize_host(_first(headers, "host"))
        if state.dev is not None and state.dev.broken and "text/html" in _first(headers, "accept"):
            behavior = pipeline.router.match(host, path)
            names = {n for n in (behavior.function, *(h.function for h in behavior.hooks.values())) if n} if behavior else set()
            if names & set(state.dev.broken):
                return await _build_error_page(state.dev.broken, names)(scope, receive, send)
        request = EdgeRequest(
            method=scope["method"], uri=path, querystring=scope["query_string"].decode("latin-1"), headers=headers,
            client_ip=_client_host(scope), body=Body(body) if body else None,
        )
        result = await pipeline.handle(request, host, rid, scope.get("scheme", "http"), TraceContext.parse(_first(headers, TRACEPARENT)))
        resp = result.response
        raw = [(name.encode("latin-1"), v.encode("latin-1")) for name, entries in resp.headers.items() if name != "content-length" for _, v in entries]
        raw.append((REQUEST_ID_HEADER.encode(), rid.encode()))
        raw.append((b"x-cache", result.cache_status.header_value.encode()))
        if result.reports:  # which version of each function ran (an alias may split between two)
            raw.append((EXECUTED_VERSION_HEADER.encode(), ", ".join(f"{r.function}:{r.version}" for r in result.reports).encode()))
        timing = ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in result.timings)
        total_ms = (time.perf_counter() - start) * 1000
        raw.append((b"server-timing", f"{timing + ', ' if timing else ''}total;dur={total_ms:.2f}".encode()))
        data = b"" if result.stream is not None else (resp.body.data if resp.body else b"")
        if result.stream is None:
            raw.append((b"content-length", str(len(data)).encode()))
        if state.console is not None:
            state.console.request(scope["method"], path, result, total_ms)
        access = access_line(
            rid, scope["method"], path, resp.status, result.behavior, result.cache_status, round(total_ms, 3),
            {s: round(ms, 3) for s, ms in result.timings}, result.outcomes, result.trace.trace_hex if result.trace is not None else None,
        )
        log_lines(access_log, (access,))
        await send({"type": "http.response.start", "status": resp.status, "headers": raw})
        if result.stream is None:
            await send({"type": "http.response.body", "body": data})
            return
        try:
            async for chunk in result.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await result.stream.aclose()
        await send({"type": "http.response.body", "body": b""})

    routes = [
        Route(f"{RESERVED_PREFIX}/health", health),
        Route(f"{RESERVED_PREFIX}/info", info),
        Route(DEV_BUILDS_PATH, dev_builds),
        # the rest of /_edgefn is never a viewer path: scheduled events use it, so a viewer cannot pose as the scheduler
        Route(RESERVED_PREFIX + "/{rest:path}", reserved_not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return EdgeApp(Starlette(routes=routes, lifespan=lifespan), edge)


class EdgeApp:
    """The ASGI app of a server process: viewer requests go straight to the edge handler; /_edgefn and the
    lifespan to a Starlette app. An exception escaping the handler is a 500 (and a logged traceback), as
    Starlette's error middleware would make it, and the server keeps serving."""

    def __init__(self, reserved: Starlette, edge: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.reserved = reserved
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.reserved(scope, receive, send)
        started = False

        async def stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _with_date_and_server(message["headers"])
            await send(message)

        if _is_reserved(scope["path"]):
            return await self.reserved(scope, receive, stamped)
        try:
            await self.edge(scope, receive, stamped)
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await PlainTextResponse("500 Internal Server Error\n", 500)(scope, receive, stamped)


#: the Server header of a response that has none (one generated at the edge, or an origin's without one)
SERVER_HEADER = b"edgefn"
_date: tuple[int, bytes] = (0, b"")


def _with_date_and_server(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's headers with Date and Server added unless it has them: the listeners add neither (an origin's
    own Date and Server pass through once, as CloudFront passes them, instead of appearing twice)."""
    global _date
    names = {name.lower() for name, _ in headers}
    if b"date" not in names:
        now = int(time.time())
        if _date[0] != now:  # formatted once a second, as the listeners did
            _date = (now, formatdate(now, usegmt=True).encode())
        headers = [*headers, (b"date", _date[1])]
    if b"server" not in names:
        headers = [*headers, (b"server", SERVER_HEADER)]
    return headers


def _is_reserved(path: str) -> bool:
    return path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/")
