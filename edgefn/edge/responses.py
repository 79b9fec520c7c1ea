"""How a failed invocation reaches the viewer: a deliberate status per failure kind (docs/errors.md)."""

from __future__ import annotations

from http import HTTPStatus

from ..core.events import Body, EdgeResponse
from ..core.exceptions import InvocationError

#: failure kind -> status. 502: the function answered wrongly (Lambda@Edge's validation errors);
#: 503: the function could not finish (execution errors, limits, throttling); 504: it ran out of time.
STATUS_OF_KIND: dict[str, int] = {
    "invalid_result": 502,
    "rule_violation": 502,
    "function_not_found": 502,
    "trap": 503,
    "function_error": 503,
    "cpu_budget_exhausted": 503,
    "memory_limit_exceeded": 503,
    "throttled": 503,
    "timeout": 504,
}


def status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_response(exc: InvocationError, dev: bool) -> EdgeResponse:
    status = STATUS_OF_KIND.get(exc.kind, 502)
    headers = {
        "content-type": [("Content-Type", "text/plain; charset=utf-8")],
        "x-edgefn-error": [("X-Edgefn-Error", exc.kind)],
        "cache-control": [("Cache-Control", "no-store")],
    }
    if exc.kind == "throttled":
        headers["retry-after"] = [("Retry-After", "1")]
    # production bodies name the failure and the request id; dev bodies add the function's own detail
    text = f"{status} {status_text(status)}: {exc.kind} in function {exc.function!r} (request {exc.request_id})\n"
    if dev:
        text += f"\n{exc}\n"
    return EdgeResponse(status, status_text(status), headers, Body(text.encode()))
