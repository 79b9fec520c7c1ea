"""fetch: outbound HTTP from a guest, only to the hosts its manifest allows (both ABI faces below).

A guest calls `edgefn:host/v1.fetch` from its worker thread, so the request is made with a blocking
client there (the event loop never waits on it); meanwhile the invocation gives its CPU slot back
(runtime/scheduler.py), so a slow fetch holds a thread but never another function's turn. The URL
passes the function's EgressPolicy (runtime/egress.py); redirects go back to the guest, never followed.
The time it may take is what is left of the invocation's wall-clock limit; when it returns late, the
epoch deadline stops the guest at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import cbor2
from wasmtime import component as wc

from ...core.events import ResultError, decode_headers
from ...core.lazy import Lazy
from ...core.tracing import TRACEPARENT, TraceContext, Tracer
from .. import _native
from ..context import current_context
from ..egress import EgressPolicy, EgressRefused, policy_for
from .capability import HostCapability, add_bytes_function
from .guest_memory import I32, request_and_result

__all__ = ["CAPABILITY", "MAX_FETCHES_PER_INVOCATION", "guest_fetch", "perform_fetch", "shared_client"]

MAX_FETCHES_PER_INVOCATION = 50
MAX_FETCH_RESPONSE_BYTES = 6 * 1024 * 1024
MAX_FETCH_SECONDS = 30.0

if TYPE_CHECKING:
    import httpx


def _make_client() -> httpx.Client:
    import httpx  # here: part of a server's start that an app with no fetch grant never pays (core/lazy.py)

    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_connections=100))


_client: Lazy[httpx.Client] = Lazy(_make_client)


def shared_client() -> httpx.Client:
    """One pooled client per process, shared by all worker threads (httpx.Client is thread-safe); made at the
    first fetch, or beside the start when a function may fetch (Runtime.start), never by a node without one."""
    return _client.get()


def perform_fetch(
    doc_bytes: bytes, policy: EgressPolicy, deadline: float, trace: tuple[TraceContext, Tracer] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run one guest fetch; returns the response document for the guest and a log line for the operator. In a
    trace, the fetch is a client span whose context goes out as `traceparent` (the guest's own is replaced)."""
    try:
        doc = cbor2.loads(doc_bytes)
        if not isinstance(doc, dict):
            raise ResultError("the fetch request must be a map")
        method = doc.get("method", "GET")
        url = doc["url"]
        if not isinstance(method, str) or not isinstance(url, str):
            raise ResultError("method and url must be text")
        headers = [(k, v) for entries in decode_headers(doc.get("headers", {}), "fetch.headers").values() for k, v in entries]
        body = doc.get("body", b"")
        if isinstance(body, str):
            body = body.encode()
    except (KeyError, ValueError, cbor2.CBORDecodeError) as exc:
        message = f"malformed fetch request: {exc}"
        return {"error": message}, message
    if not isinstance(body, bytes):
        message = "malformed fetch request: body must be bytes or text"
        return {"error": message}, message
    try:
        policy.check(url)
    except EgressRefused as exc:
        message = f"fetch refused: {exc}"
        return {"error": message}, message
    remaining = min(deadline - time.monotonic(), MAX_FETCH_SECONDS)
    if remaining <= 0:
        return {"error": "fetch refused: the invocation's wall-clock limit has passed"}, "fetch refused: out of time"
    span = None
    if trace is not None:
        span = trace[1].span(f"fetch {method}", trace[0], "client", {"http.request.method": method, "url.full": url})
        headers = [(k, v) for k, v in headers if k.lower() != TRACEPARENT] + [(TRACEPARENT, span.context.traceparent())]
    out, line = _send(method, url, headers, body, remaining)
    if span is not None:
        if "error" in out:
            span.fail(line)
        else:
            span.set("http.response.status_code", out["status"])
        span.end()
    return out, line


def _send(method: str, url: str, headers: list[tuple[str, str]], body: bytes, remaining: float) -> tuple[dict[str, Any], str]:
    start = time.perf_counter()
    give_up = time.monotonic() + remaining  # httpx's timeout is per read: this bounds the whole fetch
    try:
        with shared_client().stream(method, url, headers=headers, content=body or None, timeout=remaining) as resp:
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_FETCH_RESPONSE_BYTES:
                    message = f"fetch {method} {url}: response over {MAX_FETCH_RESPONSE_BYTES} bytes"
                    return {"error": message}, message
                if time.monotonic() > give_up:
                    raise httpx.ReadTimeout("the whole response took too long")
                chunks.append(chunk)
            resp_headers: dict[str, list[dict[str, str]]] = {}
            for raw_name, raw_value in resp.headers.raw:
                key = raw_name.decode("latin-1")
                if key.lower() not in ("content-encoding", "content-length"):  # the body arrives decoded
                    resp_headers.setdefault(key.lower(), []).append({"key": key, "value": raw_value.decode("latin-1")})
            out = {"status": resp.status_code, "headers": resp_headers, "body": b"".join(chunks)}
    except httpx.TimeoutException:
        message = f"fetch {method} {url}: timed out after {remaining:.2f} s"
        return {"error": message}, message
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        message = f"fetch {method} {url}: {type(exc).__name__}: {exc}"
        return {"error": message}, message
    ms = (time.perf_counter() - start) * 1000
    return out, f"fetch {method} {url} -> {out['status']} ({size} bytes, {ms:.1f} ms)"


# --- the two faces of the capability ---------------------------------------------------------------------

def guest_fetch(request: bytes) -> bytes:
    """One fetch for the invocation on this thread (core modules and components alike): the CBOR outcome.
    The invocation gives its CPU slot back while it waits (runtime/scheduler.py)."""
    ctx = current_context()
    ctx.fetches += 1
    if ctx.fetches > MAX_FETCHES_PER_INVOCATION:
        doc, line = {"error": f"fetch refused: more than {MAX_FETCHES_PER_INVOCATION} fetches in one invocation"}, "fetch refused: too many"
    else:
        suspend, resume = ctx.io_gate or (_nothing, _nothing)
        suspend()
        try:
            doc, line = perform_fetch(request, policy_for(ctx.allowed_hosts), ctx.deadline, ctx.trace)
        finally:
            resume()
    ctx.note(2 if "error" in doc else 1, line)
    return _native.cbor_encode(doc)


def _nothing() -> None:
    pass


def _add(host: wc.LinkerInstance) -> None:
    add_bytes_function(host, "fetch", guest_fetch)


_core_fetch, _core_fetch_result = request_and_result(guest_fetch, "pending_fetch")

CAPABILITY = HostCapability(
    "fetch", {"fetch": ([I32, I32], [I32], _core_fetch), "fetch_result": ([I32, I32], [I32], _core_fetch_result)}, _add
)
