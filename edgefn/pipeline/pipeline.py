"""viewer-request → origin-request → origin → origin-response → viewer-response, as Lambda@Edge runs them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import httpx

from ..manifest.resolve import ResolvedApp, ResolvedBehavior
from ..runtime.abi import Body, EdgeRequest, EdgeResponse, Event, EventConfig, Headers, title_case
from ..runtime.errors import InvocationError
from ..runtime.invoker import Invoker
from .behaviors import BehaviorRouter
from .errors import error_response, status_text


@dataclass
class PipelineResult:
    response: EdgeResponse
    behavior: str
    timings: list[tuple[str, float]] = field(default_factory=list)  # (stage, ms) for Server-Timing
    outcomes: dict[str, str] = field(default_factory=dict)  # event type -> "ok" | error kind


class EdgePipeline:
    def __init__(self, app: ResolvedApp, invoker: Invoker, client: httpx.AsyncClient, dev: bool = False) -> None:
        self.app = app
        self.invoker = invoker
        self.client = client
        self.dev = dev
        self.router = BehaviorRouter(app.behaviors)

    async def handle(self, request: EdgeRequest, host: str, request_id: str) -> PipelineResult:
        behavior = self.router.match(host, request.uri)
        if behavior is None:
            body = f"No behavior of this app matches host {host!r} and path {request.uri!r}.\n".encode()
            return PipelineResult(EdgeResponse(404, "Not Found", _plain_headers(), Body(body)), "none")
        result = PipelineResult(EdgeResponse(200), behavior.path_pattern)
        try:
            result.response = await self._run(behavior, request, request_id, result)
        except InvocationError as exc:
            result.response = error_response(exc, self.dev)
        return result

    async def _hook(
        self, behavior: ResolvedBehavior, event_type: str, request: EdgeRequest, response: EdgeResponse | None,
        request_id: str, result: PipelineResult,
    ) -> EdgeRequest | EdgeResponse | None:
        hook = behavior.hooks.get(event_type)
        if hook is None:
            return None
        req = request if hook.include_body or request.body is None else replace(request, body=None)
        config = EventConfig(event_type, request_id, hook.function, distribution_domain_name=self.app.name)  # type: ignore[arg-type]
        return await self._invoke(hook.function, Event(config, req, response), event_type, result)

    async def _invoke(self, function: str, event: Event, stage: str, result: PipelineResult) -> EdgeRequest | EdgeResponse:
        start = time.perf_counter()
        try:
            done = await self.invoker.invoke(self.app.functions[function], event)
        except InvocationError as exc:
            result.outcomes[stage] = exc.kind
            raise
        finally:
            result.timings.append((stage, (time.perf_counter() - start) * 1000))
        result.outcomes[stage] = "ok"
        return done.result

    async def _run(self, behavior: ResolvedBehavior, request: EdgeRequest, rid: str, result: PipelineResult) -> EdgeResponse:
        out = await self._hook(behavior, "viewer-request", request, None, rid, result)
        if isinstance(out, EdgeResponse):
            return out  # generated at viewer-request: goes straight to the viewer
        request = out or request

        out = await self._hook(behavior, "origin-request", request, None, rid, result)
        if isinstance(out, EdgeResponse):
            response = out  # generated at origin-request: skips the origin and origin-response
        else:
            request = out or request
            response = await self._origin(behavior, request, rid, result)
            changed = await self._hook(behavior, "origin-response", request, response, rid, result)
            response = changed if isinstance(changed, EdgeResponse) else response

        if response.status < 400 and "viewer-response" in behavior.hooks:
            changed = await self._hook(behavior, "viewer-response", request, response, rid, result)
            if isinstance(changed, EdgeResponse):
                response = replace(changed, status=response.status, status_description=response.status_description)
        return response

    async def _origin(self, behavior: ResolvedBehavior, request: EdgeRequest, rid: str, result: PipelineResult) -> EdgeResponse:
        if behavior.function is not None:
            config = EventConfig("origin-request", rid, behavior.function, distribution_domain_name=self.app.name)
            out = await self._invoke(behavior.function, Event(config, request), "origin", result)
            if not isinstance(out, EdgeResponse):
                return EdgeResponse(502, "Bad Gateway", _plain_headers(), Body(b"origin function returned a request, not a response\n"))
            return out
        assert behavior.origin is not None
        start = time.perf_counter()
        url = behavior.origin.rstrip("/") + request.uri + (f"?{request.querystring}" if request.querystring else "")
        headers = [(k, v) for name, entries in request.headers.items() if name not in _HOP_BY_HOP for k, v in entries]
        try:
            upstream = await self.client.request(
                request.method, url, headers=headers, content=request.body.data if request.body else None
            )
        except httpx.TimeoutException:
            return _origin_failure(504, f"origin {behavior.origin} timed out")
        except httpx.HTTPError as exc:
            return _origin_failure(502, f"origin {behavior.origin} is unreachable ({type(exc).__name__})")
        finally:
            result.timings.append(("origin", (time.perf_counter() - start) * 1000))
        resp_headers: Headers = {}
        for name, value in upstream.headers.multi_items():
            if name not in _HOP_BY_HOP and name != "content-encoding":  # httpx hands us the decoded body
                resp_headers.setdefault(name, []).append((title_case(name), value))
        return EdgeResponse(upstream.status_code, upstream.reason_phrase or status_text(upstream.status_code), resp_headers, Body(upstream.content))


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host", "content-length"})


def _plain_headers() -> Headers:
    return {"content-type": [("Content-Type", "text/plain; charset=utf-8")]}


def _origin_failure(status: int, message: str) -> EdgeResponse:
    return EdgeResponse(status, status_text(status), _plain_headers(), Body(message.encode() + b"\n"))
