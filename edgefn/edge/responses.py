"""How a failed invocation reaches the viewer: a deliberate status per failure class (docs/errors.md)."""

from __future__ import annotations

from http import HTTPStatus

from ..core.events import Body, EdgeResponse
from ..core.exceptions import (
    CpuBudgetExhausted,
    EphemeralStorageLimitExceeded,
    FunctionError,
    FunctionInitError,
    FunctionPending,
    GuestTrap,
    InvalidResult,
    InvocationError,
    MemoryLimitExceeded,
    RuleViolation,
    Throttled,
    UnknownFunction,
    WallClockTimeout,
    status_by_class,
)

#: the viewer's status per failure class. 502: the function answered wrongly (Lambda@Edge's validation
#: errors); 503: it could not finish (execution errors, limits, throttling); 504: it ran out of time.
VIEWER_STATUS: dict[type[BaseException], int] = {
    InvalidResult: 502,
    RuleViolation: 502,
    UnknownFunction: 502,
    GuestTrap: 503,
    FunctionError: 503,
    FunctionInitError: 503,
    FunctionPending: 503,
    CpuBudgetExhausted: 503,
    MemoryLimitExceeded: 503,
    EphemeralStorageLimitExceeded: 503,
    Throttled: 503,
    WallClockTimeout: 504,
}


def status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_response(exc: InvocationError, dev: bool) -> EdgeResponse:
    status = status_by_class(VIEWER_STATUS, exc, 502)
    headers = {
        "content-type": [("Content-Type", "text/plain; charset=utf-8")],
        "x-edgefn-error": [("X-Edgefn-Error", exc.kind)],
        "cache-control": [("Cache-Control", "no-store")],
    }
    if exc.kind in ("throttled", "function_pending"):
        headers["retry-after"] = [("Retry-After", "1" if exc.kind == "throttled" else "2")]
    # production bodies name the failure and the request id; dev bodies add the function's own detail
    text = f"{status} {status_text(status)}: {exc.kind} in function {exc.function!r} (request {exc.request_id})\n"
    if dev:
        text += f"\n{exc}\n"
    return EdgeResponse(status, status_text(status), headers, Body(text.encode()))
