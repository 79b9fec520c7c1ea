"""Lambda@Edge's rules for what each trigger may see and change, enforced with errors that say which rule.

Lambda@Edge answers a broken rule with an opaque 502; edgefn answers 502 too, but the log line (and in dev
mode the body) names the function, the trigger, the header or field, and the rule.
"""

from __future__ import annotations

from dataclasses import replace

from ..core.events import Body, EdgeRequest, EdgeResponse, Headers
from ..core.exceptions import RuleViolation

KB = 1024
MB = 1024 * 1024

#: headers a function never sees and may not add (hop-by-hop, and the edge's own)
DISALLOWED = frozenset(
    {
        "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "trailer", "upgrade", "x-accel-buffering", "x-accel-charset", "x-accel-limit-rate", "x-accel-redirect",
        "x-cache", "x-forwarded-proto", "x-real-ip", "x-amzn-auth", "x-amzn-cf-billing", "x-amzn-cf-id",
        "x-amzn-cf-xff", "x-amzn-errortype", "x-amzn-fle-profile", "x-amzn-header-count", "x-amzn-header-order",
        "x-amzn-lambda-integration-tag", "x-amzn-requestid",
    }
)
DISALLOWED_PREFIXES = ("x-amz-cf-", "x-edge-", "x-edgefn-")

#: headers a trigger may read but not change
READ_ONLY: dict[str, frozenset[str]] = {
    "viewer-request": frozenset({"content-length", "host", "transfer-encoding", "via"}),
    "origin-request": frozenset(
        {"accept-encoding", "content-length", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "transfer-encoding", "via"}
    ),
    "origin-response": frozenset({"transfer-encoding", "via"}),
    "viewer-response": frozenset({"content-encoding", "content-length", "transfer-encoding", "warning", "via"}),
}

#: how the edge frames a message it sends: never taken from a function
FRAMING = frozenset({"transfer-encoding"})

VIEWER_EVENTS = frozenset({"viewer-request", "viewer-response"})
#: body bytes exposed to a function with include_body (past this: truncated, inputTruncated = true)
EXPOSED_BODY_LIMIT = {"viewer": 40 * KB, "origin": 1 * MB}
#: generated responses (headers + body) and replacement bodies
GENERATED_LIMIT = {"viewer": 40 * KB, "origin": 1 * MB}
MAX_URI_AND_QUERY = 8192


def trigger_kind(event_type: str) -> str:
    return "viewer" if event_type in VIEWER_EVENTS else "origin"


def is_disallowed(name: str) -> bool:
    return name in DISALLOWED or name.startswith(DISALLOWED_PREFIXES)


def visible_headers(headers: Headers) -> Headers:
    """The headers a function is shown: disallowed ones are hidden, as Lambda@Edge does (`headers` itself
    when none is: callers only read the result)."""
    for name in headers:
        if is_disallowed(name):
            return {n: v for n, v in headers.items() if not is_disallowed(n)}
    return headers


def expose_body(body: Body | None, event_type: str) -> Body | None:
    """The body as an include_body function sees it: cut at the trigger's limit, with inputTruncated."""
    if body is None:
        return None
    limit = EXPOSED_BODY_LIMIT[trigger_kind(event_type)]
    if len(body.data) <= limit:
        return body
    return Body(body.data[:limit], True)


def _headers_size(headers: Headers) -> int:
    return sum(len(k) + len(v) + 4 for entries in headers.values() for k, v in entries)


def _check_header_changes(fn: str, rid: str, trigger: str, before: Headers, after: Headers, where: str) -> None:
    for name in after:
        if is_disallowed(name):
            raise RuleViolation(fn, rid, trigger, f"{where}.headers[{name!r}]", f"{name!r} is a disallowed header: functions may not set it")
    for name in READ_ONLY[trigger]:
        old = [v for _, v in before.get(name, [])]
        new = [v for _, v in after.get(name, [])]
        if old != new:
            raise RuleViolation(fn, rid, trigger, f"{where}.headers[{name!r}]", f"{name!r} is read-only in {trigger} (was {old}, now {new})")


def _check_generated(fn: str, rid: str, trigger: str, resp: EdgeResponse, where: str) -> None:
    limit = GENERATED_LIMIT[trigger_kind(trigger)]
    size = _headers_size(resp.headers) + (len(resp.body.data) if resp.body else 0)
    if size > limit:
        raise RuleViolation(fn, rid, trigger, where, f"a response from {trigger} may be at most {limit} bytes of headers and body (got {size})")
    if resp.status == 204 and resp.body is not None and resp.body.data:
        raise RuleViolation(fn, rid, trigger, f"{where}.body", "a 204 response may not have a body")
    _check_set_headers(fn, rid, trigger, resp, where)


def _check_set_headers(fn: str, rid: str, trigger: str, resp: EdgeResponse, where: str) -> None:
    """No header of a function's response may be one the edge owns (disallowed) or frames the message with."""
    for name in resp.headers:
        if is_disallowed(name):
            raise RuleViolation(fn, rid, trigger, f"{where}.headers[{name!r}]", f"{name!r} is a disallowed header: functions may not set it")
        if name in FRAMING:
            raise RuleViolation(fn, rid, trigger, f"{where}.headers[{name!r}]", f"{name!r} frames the message: the edge sets it itself")


def check_request_result(fn: str, rid: str, trigger: str, before: EdgeRequest, after: EdgeRequest) -> EdgeRequest:
    """A request returned by a request trigger; returns it with the hidden headers put back."""
    _check_header_changes(fn, rid, trigger, visible_headers(before.headers), after.headers, "request")
    if len(after.uri) + len(after.querystring) + 1 > MAX_URI_AND_QUERY:
        raise RuleViolation(fn, rid, trigger, "request.uri", f"the URI plus query string must be under {MAX_URI_AND_QUERY} characters")
    if after.body is not None and after.body is not before.body:
        limit = GENERATED_LIMIT[trigger_kind(trigger)]
        if len(after.body.data) > limit:
            raise RuleViolation(fn, rid, trigger, "request.body", f"a replacement body from {trigger} may be at most {limit} bytes")
    hidden = {n: v for n, v in before.headers.items() if is_disallowed(n)}
    return replace(after, headers={**after.headers, **hidden}) if hidden else after


def check_generated_response(fn: str, rid: str, trigger: str, resp: EdgeResponse) -> EdgeResponse:
    """A response generated by a request trigger (a short-circuit)."""
    _check_generated(fn, rid, trigger, resp, "response")
    return resp


def check_origin_response(fn: str, rid: str, resp: EdgeResponse) -> EdgeResponse:
    """The response of a function acting as the origin: the same header rules as a hook's response
    (disallowed headers, framing); its size is bounded by the function's max_result_bytes."""
    _check_set_headers(fn, rid, "origin", resp, "response")
    return resp


def check_response_result(fn: str, rid: str, trigger: str, before: EdgeResponse, after: EdgeResponse) -> EdgeResponse:
    """A changed response from a response trigger (`after.body is before.body` when it kept the body)."""
    if trigger == "viewer-response" and after.status != before.status:
        raise RuleViolation(fn, rid, trigger, "response.status", f"viewer-response may not change the status (was {before.status}, now {after.status})")
    _check_header_changes(fn, rid, trigger, visible_headers(before.headers), after.headers, "response")
    if after.body is not before.body and after.body is not None:
        _check_generated(fn, rid, trigger, after, "response")
    hidden = {n: v for n, v in before.headers.items() if is_disallowed(n)}
    return replace(after, headers={**after.headers, **hidden}) if hidden else after
