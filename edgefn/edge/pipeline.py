"""viewer-request → cache → origin-request → origin → origin-response → cache store → viewer-response.

The order and the skips follow Lambda@Edge (../shared/reference/lambda-and-edge.md §1.2):
- a response generated at viewer-request goes straight to the viewer (not cached, no viewer-response);
- origin-request and origin-response run only on a cache miss; a response generated at origin-request
  is cached and skips the origin and origin-response;
- viewer-response runs on hits and misses, may not change the status, and is skipped for origin errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, TypeVar, cast
from urllib.parse import unquote_plus, urlsplit

from ..core.app import CachePolicy, ResolvedApp, ResolvedBehavior
from ..core.events import (
    Body,
    EdgeRequest,
    EdgeResponse,
    Event,
    EventConfig,
    EventType,
    Headers,
    XCache,
)
from ..core.exceptions import InvocationError, RuleViolation
from ..core.lazy import Lazy
from ..core.ports import EdgeObserver, FunctionResolver, NoObserver
from ..core.report import InvocationReport
from ..core.tracing import TRACEPARENT, UNTRACED, TraceContext, Tracer
from ..runtime.egress import EgressRefused, policy_for
from ..runtime.invoker import Invoker, function_logger
from . import rules
from .cache import (
    SURROGATE_KEY_HEADERS,
    EdgeCache,
    allowlisted,
    cache_key,
    is_cacheable_method,
    request_cookies,
)
from .paths import origin_path
from .responses import error_response, status_text
from .routing import BehaviorRouter

if TYPE_CHECKING:
    import httpx


@dataclass
class PipelineResult:
    response: EdgeResponse
    behavior: str
    #: the origin body still streaming (no hook needed it, nothing caches it); None when in response.body
    stream: AsyncGenerator[bytes, None] | None = None
    cache_status: XCache = XCache.MISS
    timings: list[tuple[str, float]] = field(default_factory=list)  # (stage, ms) for Server-Timing
    outcomes: dict[str, str] = field(default_factory=dict)  # event type -> "ok" | error kind
    reports: list[InvocationReport] = field(default_factory=list)  # one per function that ran
    allowed_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> the allowed_hosts of what ran
    #: how the viewer reached the edge ("http" or "https"): the origin's X-Forwarded-Proto
    viewer_scheme: str = "http"
    #: the request's span: every hook, the cache and the origin fetch are its children (core/tracing.py)
    trace: TraceContext | None = None


@dataclass
class _Origin:
    """Where a request goes after origin-request: a URL origin or a function acting as the origin."""

    url: str | None = None
    function: str | None = None


#: a viewer's own conditionals are not forwarded on a cached behavior: the cache revalidates with its own
_VIEWER_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-range", "if-match", "if-unmodified-since"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host", "content-length"})
#: request headers the edge sets itself for an origin (whatever the viewer sent), or never forwards (Expect: the
#: edge has read the whole body already, as CloudFront does)
_SET_FOR_ORIGIN = frozenset({"via", "x-forwarded-for", "x-forwarded-proto", "expect"})


def _hop_by_hop(headers: Headers) -> frozenset[str]:
    """The hop-by-hop headers of a message: the fixed ones and those its Connection header names (RFC 9110 §7.6.1)."""
    named = {t.strip().lower() for _, v in headers.get("connection", ()) for t in v.split(",") if t.strip()}
    return _HOP_BY_HOP | named if named else _HOP_BY_HOP


#: the name edgefn gives itself in Via: requests it sends carry one more entry, and too many is a loop (508)
VIA_PSEUDONYM = "edgefn"


class EdgePipeline:
    def __init__(
        self, app: ResolvedApp, catalog: FunctionResolver, invoker: Invoker, client: Lazy[httpx.AsyncClient], cache: EdgeCache, dev: bool = False,
        recorder: Callable[[str, Event], None] | None = None, observer: EdgeObserver | None = None,
    ) -> None:
        self.app = app
        self.catalog = catalog  # function references (name, name:7, name:alias) -> what runs
        self.observer: EdgeObserver = observer or NoObserver()
        self.invoker = invoker
        #: the HTTP origins' client, made at the first request to one (core/lazy.py)
        self.client = client
        self.cache = cache
        self.dev = dev
        self.recorder = recorder  # `edgefn dev --record`: sees every event before its function runs
        self.router = BehaviorRouter(app.behaviors)
        #: origin switching may go to the origins the app declares (plus the function's allowed_hosts)
        self.declared_origins = tuple(_host_port(b.origin) for b in app.behaviors if b.origin)
        #: where the request's spans go (the node sets the exporter when [tracing] asks; contexts propagate anyway)
        self.tracer: Tracer = UNTRACED

    async def handle(
        self, request: EdgeRequest, host: str, request_id: str, scheme: str = "http", parent: TraceContext | None = None,
    ) -> PipelineResult:
        """One viewer request through its behavior; `parent` is the viewer's trace context (its traceparent), if any."""
        behavior = self.router.match(host, request.uri)
        pattern = behavior.path_pattern if behavior is not None else "none"
        exporting = self.tracer.exporting
        if exporting:
            span = self.tracer.span(f"{request.method} {pattern}", parent, "server", {
                "http.request.method": request.method, "url.path": request.uri, "server.address": host, "edgefn.request_id": request_id,
            })
        else:  # only its context (propagation, the trace id in logs): no name or attributes to build
            span = self.tracer.span("", parent, "server")
        if behavior is None:
            body = f"No behavior of this app matches host {host!r} and path {request.uri!r}.\n".encode()
            result = PipelineResult(EdgeResponse(404, "Not Found", _plain_headers(), Body(body)), "none", cache_status=XCache.ERROR, trace=span.context)
        else:
            result = PipelineResult(EdgeResponse(200), behavior.path_pattern, viewer_scheme=scheme, trace=span.context)
            try:
                await self._run(behavior, request, host, request_id, result)
            except InvocationError as exc:
                if isinstance(exc, RuleViolation):  # the invocation itself was counted as ok: its result was not
                    self.observer.invocation_rejected(exc.function, exc.kind)
                await _close(result)
                result.response, result.cache_status = error_response(exc, self.dev), XCache.ERROR
                span.fail(f"{exc.kind} in {exc.function}")
        if exporting:
            span.set("http.response.status_code", result.response.status)
            span.set("edgefn.cache", str(result.cache_status))
        span.end()
        return result

    # --- stages, top to bottom --------------------------------------------------------------------

    async def _run(self, behavior: ResolvedBehavior, request: EdgeRequest, host: str, rid: str, result: PipelineResult) -> None:
        out = await self._request_hook(behavior, "viewer-request", request, rid, result)
        if isinstance(out, EdgeResponse):
            result.response, result.cache_status = out, XCache.LAMBDA_GENERATED
            return
        request = out

        if behavior.cache is not None and is_cacheable_method(request.method):
            await self._through_cache(behavior, behavior.cache, request, host, rid, result)
        else:
            await self._origin_side(behavior, request, rid, result)

        response = result.response
        if response.status >= 400:
            result.cache_status = XCache.ERROR
        if response.status < 400 and "viewer-response" in behavior.hooks:
            result.response = await self._response_hook(behavior, "viewer-response", request, response, rid, result)

    async def _through_cache(
        self, behavior: ResolvedBehavior, policy: CachePolicy, request: EdgeRequest, host: str, rid: str, result: PipelineResult
    ) -> None:
        """A hit skips the origin side; concurrent misses for one key share one origin fetch."""
        key = cache_key(policy, f"{behavior.host_pattern}|{behavior.path_pattern}", host, request)
        forwarded = forwarded_request(policy, request)  # only what the key names: unkeyed variation is impossible

        made_by: set[str] = set()

        async def fetch(conditional: Headers) -> EdgeResponse:
            before = len(result.reports)
            await self._origin_side(behavior, replace(forwarded, headers={**forwarded.headers, **conditional}), rid, result)
            made_by.update(r.function for r in result.reports[before:])
            if result.stream is not None:
                await _buffer(result)  # the cache stores whole bodies
            return result.response

        span = self.tracer.span("cache", result.trace, "internal", {"edgefn.behavior": behavior.path_pattern})
        cached = await self.cache.get_or_fetch(key, request, policy, fetch)
        span.set("edgefn.cache", str(cached.x_cache))
        span.end()
        if made_by and cached.entry is not None and cached.x_cache in (XCache.MISS, XCache.REFRESH_HIT):
            cached.entry.made_by |= made_by  # this request's fetch stored it: a deploy of these drops it
        for name in SURROGATE_KEY_HEADERS:  # the origin's tags are the cache's (purge --tag), not the viewer's
            cached.response.headers.pop(name, None)
        self.observer.cache_request(cached.x_cache)
        result.response, result.cache_status = cached.response, cached.x_cache

    async def _origin_side(self, behavior: ResolvedBehavior, request: EdgeRequest, rid: str, result: PipelineResult) -> None:
        """What happens on a cache miss: origin-request, the origin, origin-response."""
        origin = _default_origin(behavior)
        if "origin-request" in behavior.hooks:
            shown = _origin_doc(origin, behavior)
            with_origin = replace(request, origin=shown)
            out = await self._request_hook(behavior, "origin-request", with_origin, rid, result)
            if isinstance(out, EdgeResponse):
                result.response = out  # generated at origin-request: skips the origin and origin-response
                return
            if out.origin is not None and out.origin != shown:
                try:
                    origin = await self._switched_origin(out.origin, behavior, rid, result)
                except RuleViolation as exc:
                    raise _reported(exc, "origin-request", result) from None
            if out is not with_origin:
                request = replace(out, origin=None)
        await self._fetch_origin(behavior, origin, request, rid, result)
        if "origin-response" in behavior.hooks:
            result.response = await self._response_hook(behavior, "origin-response", request, result.response, rid, result)

    # --- hooks ------------------------------------------------------------------------------------

    async def _invoke(self, function: str, event: Event, stage: str, result: PipelineResult) -> EdgeRequest | EdgeResponse:
        start = time.perf_counter()
        if self.recorder is not None:
            self.recorder(function, event)
        spec = self.catalog.select(function, event.config.request_id)
        result.allowed_hosts[stage] = spec.allowed_hosts
        try:
            done = await self.invoker.invoke(spec, event)
        except InvocationError as exc:
            result.outcomes[stage] = exc.kind
            if exc.report is not None:
                result.reports.append(exc.report)
            raise
        finally:
            result.timings.append((stage, (time.perf_counter() - start) * 1000))
        result.outcomes[stage] = "ok"
        result.reports.append(done.report)
        return done.result

    def _event(
        self, event_type: str, function: str, rid: str, request: EdgeRequest, result: PipelineResult, response: EdgeResponse | None = None,
    ) -> Event:
        config = EventConfig(cast(EventType, event_type), rid, function, distribution_domain_name=self.app.name, trace=result.trace)
        return Event(config, request, response)

    async def _request_hook(
        self, behavior: ResolvedBehavior, event_type: str, request: EdgeRequest, rid: str, result: PipelineResult
    ) -> EdgeRequest | EdgeResponse:
        hook = behavior.hooks.get(event_type)
        if hook is None:
            return request
        exposed = rules.expose_body(request.body, event_type) if hook.include_body else None
        shown = _shown(request, exposed)
        out = await self._invoke(hook.function, self._event(event_type, hook.function, rid, shown, result), event_type, result)
        if out is shown:  # the function changed nothing (`edgefn_continue`): no rule can be broken
            return request
        try:
            if isinstance(out, EdgeResponse):
                return rules.check_generated_response(hook.function, rid, event_type, out)
            if out.body is exposed:  # the function kept the body: the viewer's, never the truncated copy
                out = replace(out, body=request.body)
            return rules.check_request_result(hook.function, rid, event_type, request, out)
        except RuleViolation as exc:
            raise _reported(exc, event_type, result) from None

    async def _response_hook(
        self, behavior: ResolvedBehavior, event_type: str, request: EdgeRequest, response: EdgeResponse, rid: str,
        result: PipelineResult,
    ) -> EdgeResponse:
        hook = behavior.hooks[event_type]
        if hook.include_body and result.stream is not None:
            await _buffer(result)
            response = result.response
        exposed = rules.expose_body(response.body, event_type) if hook.include_body else None
        shown_response = _shown(response, exposed)
        event = self._event(event_type, hook.function, rid, _shown(request, None), result, shown_response)
        out = await self._invoke(hook.function, event, event_type, result)
        assert isinstance(out, EdgeResponse)  # decode_result refuses requests from response triggers
        if out is shown_response:  # the function changed nothing (`edgefn_continue`): no rule can be broken
            return response
        if out.body is exposed:
            out = replace(out, body=response.body)
        elif result.stream is not None:
            await _close(result)  # the function replaced the body: the origin's stream is not needed
        try:
            return rules.check_response_result(hook.function, rid, event_type, response, out)
        except RuleViolation as exc:
            raise _reported(exc, event_type, result) from None

    # --- the origin -------------------------------------------------------------------------------

    async def _switched_origin(self, doc: dict[str, Any], behavior: ResolvedBehavior, rid: str, result: PipelineResult) -> _Origin:
        """origin-request may switch the origin by returning another `origin` map (custom URL or function);
        a URL must pass the egress policy: the app's declared origins plus the function's allowed_hosts."""
        fn = behavior.hooks["origin-request"].function
        if isinstance(doc.get("function"), dict):
            name = doc["function"].get("name")
            problem = self.catalog.check(name) if isinstance(name, str) else "must be a string"
            if problem is not None:
                raise RuleViolation(fn, rid, "origin-request", "request.origin.function.name", f"{name!r}: {problem}")
            return _Origin(function=name)
        custom = doc.get("custom")
        if not isinstance(custom, dict) or not isinstance(custom.get("domainName"), str):
            raise RuleViolation(fn, rid, "origin-request", "request.origin", "must hold custom{domainName, port, protocol, path} or function{name}")
        protocol = custom.get("protocol", "https")
        port = custom.get("port", 443 if protocol == "https" else 80)
        if protocol not in ("http", "https") or not isinstance(port, int) or not 1 <= port <= 65535:
            raise RuleViolation(fn, rid, "origin-request", "request.origin.custom", "protocol must be http or https and port 1..65535")
        path = custom.get("path", "")
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise RuleViolation(fn, rid, "origin-request", "request.origin.custom.path", "must be empty or start with '/'")
        url = f"{protocol}://{custom['domainName']}:{port}{origin_path(path) if path else ''}"
        policy = policy_for(self.declared_origins + result.allowed_hosts.get("origin-request", ()))
        try:
            await policy.check_async(url)
        except EgressRefused as exc:
            raise RuleViolation(fn, rid, "origin-request", "request.origin.custom.domainName", f"origin switch refused: {exc}") from None
        return _Origin(url=url)

    def _origin_request_headers(self, request: EdgeRequest, scheme: str) -> list[tuple[str, str]]:
        """The viewer's headers as an origin gets them (CloudFront's rules, docs/pipeline.md): hop-by-hop ones and
        `Expect` dropped, our entry appended to Via, X-Forwarded-For and X-Forwarded-Proto set by the edge."""
        dropped = _hop_by_hop(request.headers) | _SET_FOR_ORIGIN
        headers = [(k, v) for name, entries in request.headers.items() if name not in dropped for k, v in entries]
        headers.append(("Via", ", ".join([*(v for _, v in request.headers.get("via", [])), f"1.1 {VIA_PSEUDONYM}"])))
        chain = [v for _, v in request.headers.get("x-forwarded-for", [])] if self.app.server.trust_forwarded_for else []
        headers.append(("X-Forwarded-For", ", ".join([*chain, request.client_ip])))
        headers.append(("X-Forwarded-Proto", scheme))
        return headers

    async def _fetch_origin(self, behavior: ResolvedBehavior, origin: _Origin, request: EdgeRequest, rid: str, result: PipelineResult) -> None:
        start = time.perf_counter()
        if origin.function is not None:
            event = self._event("origin-request", origin.function, rid, request, result)
            out = await self._invoke(origin.function, event, "origin", result)
            self.observer.origin_fetched(behavior.path_pattern, time.perf_counter() - start)
            if not isinstance(out, EdgeResponse):
                result.response = _origin_failure(502, f"origin function {origin.function!r} returned a request, not a response")
                return
            try:
                result.response = rules.check_origin_response(origin.function, rid, out)
            except RuleViolation as exc:
                raise _reported(exc, "origin", result) from None
            return
        assert origin.url is not None
        url = origin.url.rstrip("/") + origin_path(request.uri) + (f"?{request.querystring}" if request.querystring else "")
        headers = self._origin_request_headers(request, result.viewer_scheme)
        span = self.tracer.span(f"origin {request.method}", result.trace, "client", {"http.request.method": request.method, "url.full": url})
        headers = [(k, v) for k, v in headers if k.lower() != TRACEPARENT] + [(TRACEPARENT, span.context.traceparent())]
        import httpx  # the client's, made by now: an app without HTTP origins never imports it (core/lazy.py)

        client = self.client.get()
        timeout = httpx.Timeout(behavior.origin_read_timeout_s, connect=behavior.origin_connect_timeout_s)
        upstream_req = client.build_request(
            request.method, url, headers=headers, content=request.body.data if request.body else None, timeout=timeout
        )
        try:
            upstream = await client.send(upstream_req, stream=True)
        except httpx.TimeoutException:
            result.response = _origin_failure(504, f"origin {origin.url} did not answer within its timeout")
            span.fail("timeout")
            span.end()
            return
        except httpx.HTTPError as exc:
            result.response = _origin_failure(502, f"origin {origin.url} is unreachable ({type(exc).__name__})")
            span.fail(type(exc).__name__)
            span.end()
            return
        finally:
            result.timings.append(("origin", (time.perf_counter() - start) * 1000))
            self.observer.origin_fetched(behavior.path_pattern, time.perf_counter() - start)
        span.set("http.response.status_code", upstream.status_code)
        span.end()
        resp_headers: Headers = {}
        for raw_name, raw_value in upstream.headers.raw:
            key = raw_name.decode("latin-1")
            resp_headers.setdefault(key.lower(), []).append((key, raw_value.decode("latin-1")))
        hop = _hop_by_hop(resp_headers)
        resp_headers = {n: v for n, v in resp_headers.items() if n not in hop}
        result.response = EdgeResponse(upstream.status_code, upstream.reason_phrase or status_text(upstream.status_code), resp_headers)
        result.stream = _relay(upstream)


_Shown = TypeVar("_Shown", EdgeRequest, EdgeResponse)


def _shown(message: _Shown, body: Body | None) -> _Shown:
    """A request or response as a trigger's function sees it: without the hidden headers and with `body`
    (the message itself when that changes nothing, so an unchanged result can be told by identity)."""
    headers = rules.visible_headers(message.headers)
    if headers is message.headers and body is message.body:
        return message
    return replace(message, headers=headers, body=body)


def _reported(exc: RuleViolation, stage: str, result: PipelineResult) -> RuleViolation:
    """A rule broken after the invocation itself succeeded: record it and write it to the function's log."""
    result.outcomes[stage] = exc.kind
    function_logger(exc.function).error("%s\t%s", exc.request_id, exc)
    return exc


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forwarded_request(policy: CachePolicy, request: EdgeRequest) -> EdgeRequest:
    """What a cached behavior sends towards the origin: only the headers, cookies and query parameters its
    cache key names (CloudFront's model), so nothing the key leaves out can change what gets stored.

    Accept-Encoding is sent as `identity` unless keyed, so the origin cannot vary the encoding unseen."""
    keyed = {h.lower() for h in policy.headers}
    headers: Headers = {n: v for n, v in request.headers.items() if (n in keyed or n in ("via", "host")) and n not in _VIEWER_CONDITIONALS}
    if "accept-encoding" not in keyed:
        headers["accept-encoding"] = [("Accept-Encoding", "identity")]
    if policy.cookies and "cookie" not in keyed:
        cookies = allowlisted(request_cookies(request), policy.cookies)
        if cookies:
            headers["cookie"] = [("Cookie", "; ".join(f"{n}={v}" for n, v in cookies))]
    if "*" in policy.query_strings:
        query = request.querystring
    else:
        allowed = set(policy.query_strings)
        query = "&".join(p for p in request.querystring.split("&") if p and unquote_plus(p.partition("=")[0]) in allowed)
    return replace(request, headers=headers, querystring=query)


def _default_origin(behavior: ResolvedBehavior) -> _Origin:
    return _Origin(url=behavior.origin, function=behavior.function)


def _origin_doc(origin: _Origin, behavior: ResolvedBehavior) -> dict[str, Any]:
    """The Lambda@Edge `request.origin` object shown to origin-request functions."""
    if origin.function is not None:
        return {"function": {"name": origin.function}}
    assert origin.url is not None
    parts = urlsplit(origin.url)
    return {
        "custom": {
            "domainName": parts.hostname or "",
            "port": parts.port or (443 if parts.scheme == "https" else 80),
            "protocol": parts.scheme,
            "path": parts.path.rstrip("/"),
            "readTimeout": int(behavior.origin_read_timeout_s),
            "keepaliveTimeout": 5,
            "customHeaders": {},
        }
    }


async def _relay(upstream: httpx.Response) -> AsyncGenerator[bytes, None]:
    """Stream the origin's raw bytes (content-encoding stays as the origin sent it)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


async def _buffer(result: PipelineResult) -> None:
    """Read a streaming origin body into the response (a hook or the cache needs it)."""
    assert result.stream is not None
    chunks = [chunk async for chunk in result.stream]
    result.stream = None
    result.response = replace(result.response, body=Body(b"".join(chunks)))


async def _close(result: PipelineResult) -> None:
    if result.stream is not None:
        await result.stream.aclose()
        result.stream = None


def _plain_headers() -> Headers:
    return {"content-type": [("Content-Type", "text/plain; charset=utf-8")]}


def _origin_failure(status: int, message: str) -> EdgeResponse:
    return EdgeResponse(status, status_text(status), _plain_headers(), Body(message.encode() + b"\n"))
