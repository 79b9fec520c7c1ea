"""The event model: Lambda@Edge requests, responses and events, and their document and JSON forms.

One in-process form of an event, shared by every layer (the edge builds them, the runtime encodes them for
a guest, the admin API and the queue read them from JSON). The document form (`event_document`,
`decode_response`, `decode_headers`) is what both wire formats carry: CBOR to guests (runtime/abi.py) and
JSON to clients (`event_from_json`, `to_json_document`). Each field is checked on the way in and a
`ResultError` names the one that is wrong.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, cast

from .tracing import TraceContext

__all__ = [
    "EVENT_TYPES", "MAX_JSON_DEPTH", "VIA", "XCache", "REQUEST_EVENTS", "Body", "EdgeRequest", "EdgeResponse", "Event", "EventConfig",
    "EventType", "Headers", "ResultError", "apply_request", "check_keys", "decode_headers", "decode_response", "event_document",
    "event_from_document", "event_from_json", "expect_field", "json_document", "sample_event", "title_case", "to_json_document",
]

EventType = Literal["viewer-request", "origin-request", "origin-response", "viewer-response"]


EVENT_TYPES: tuple[str, ...] = ("viewer-request", "origin-request", "origin-response", "viewer-response")


REQUEST_EVENTS = frozenset({"viewer-request", "origin-request"})


#: lowercase name -> one (key as sent, value) pair per repeat of the header
Headers = dict[str, list[tuple[str, str]]]


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")


_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")


@dataclass
class Body:
    data: bytes
    input_truncated: bool = False


@dataclass
class EdgeRequest:
    method: str
    uri: str
    querystring: str = ""
    headers: Headers = field(default_factory=dict)
    client_ip: str = ""
    body: Body | None = None
    origin: dict[str, Any] | None = None


@dataclass
class EdgeResponse:
    status: int
    status_description: str = ""
    headers: Headers = field(default_factory=dict)
    body: Body | None = None


@dataclass
class EventConfig:
    event_type: EventType
    request_id: str
    function_name: str = ""
    distribution_domain_name: str = ""
    distribution_id: str = ""
    #: the span this event's invocation is a child of (core/tracing.py); not part of the guest's document
    trace: TraceContext | None = field(default=None, compare=False, repr=False)


@dataclass
class Event:
    config: EventConfig
    request: EdgeRequest
    response: EdgeResponse | None = None


class ResultError(ValueError):
    """A result document broke ABI v1; the message names the offending field."""


def _headers_doc(headers: Headers) -> dict[str, list[dict[str, str]]]:
    return {name: [{"key": k, "value": v} for k, v in entries] for name, entries in headers.items()}


def _body_doc(body: Body) -> dict[str, Any]:
    return {"data": body.data, "inputTruncated": body.input_truncated}


def _request_doc(req: EdgeRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "clientIp": req.client_ip,
        "method": req.method,
        "uri": req.uri,
        "querystring": req.querystring,
        "headers": _headers_doc(req.headers),
    }
    if req.body is not None:
        doc["body"] = _body_doc(req.body)
    if req.origin is not None:
        doc["origin"] = req.origin
    return doc


def _response_doc(resp: EdgeResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": resp.status,
        "statusDescription": resp.status_description,
        "headers": _headers_doc(resp.headers),
    }
    if resp.body is not None:
        doc["body"] = _body_doc(resp.body)
    return doc


def event_document(event: Event) -> dict[str, Any]:
    cfg = event.config
    doc: dict[str, Any] = {
        "config": {
            "eventType": cfg.event_type,
            "requestId": cfg.request_id,
            "distributionDomainName": cfg.distribution_domain_name,
            "distributionId": cfg.distribution_id,
            "functionName": cfg.function_name,
        },
        "request": _request_doc(event.request),
    }
    if event.response is not None:
        doc["response"] = _response_doc(event.response)
    return doc


def expect_field(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ResultError(f"{path} must be {what}, got {type(value).__name__}")
    return value


def check_keys(doc: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            raise ResultError(f"{path} has unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


#: lowercase name -> its Title-Case form: requests repeat a few dozen names (bounded: a client may send any)
_TITLE_CASE: dict[str, str] = {}


def title_case(name: str) -> str:
    titled = _TITLE_CASE.get(name)
    if titled is None:
        titled = "-".join(part[:1].upper() + part[1:] for part in name.split("-"))
        if len(_TITLE_CASE) < 4096:
            _TITLE_CASE[name] = titled
    return titled


_ENTRY_KEYS = frozenset({"key", "value"})


def decode_headers(doc: Any, path: str) -> Headers:
    expect_field(doc, dict, path, "a map of lowercase name to a list of {key, value}")
    headers: Headers = {}
    for name, entries in doc.items():
        # the checks of a well-formed entry inline; the paths of error messages are built only on an error
        if not isinstance(name, str):
            expect_field(name, str, path, "text keys")
        if not _TOKEN.match(name):
            raise ResultError(f"{path}[{name!r}]: header names must be lowercase HTTP tokens")
        if not isinstance(entries, list):
            expect_field(entries, list, f"{path}[{name!r}]", "a list of {key, value}")
        out: list[tuple[str, str]] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                expect_field(entry, dict, f"{path}[{name!r}][{i}]", "a map {key, value}")
            if not entry.keys() <= _ENTRY_KEYS:
                check_keys(entry, _ENTRY_KEYS, f"{path}[{name!r}][{i}]")
            value = entry.get("value")
            if not isinstance(value, str):
                expect_field(value, str, f"{path}[{name!r}][{i}].value", "text")
            key = entry["key"] if "key" in entry else title_case(name)
            if not isinstance(key, str):
                expect_field(key, str, f"{path}[{name!r}][{i}].key", "text")
            if key.lower() != name:
                raise ResultError(f"{path}[{name!r}][{i}].key {key!r} does not match the header name {name!r}")
            if _BAD_VALUE_CHARS.search(value):
                raise ResultError(f"{path}[{name!r}][{i}].value contains CR, LF or NUL")
            out.append((key, value))
        if out:
            headers[name] = out
    return headers


def _decode_body(doc: Any, path: str) -> Body:
    if isinstance(doc, dict):
        check_keys(doc, frozenset({"data", "inputTruncated"}), path)
        data = expect_field(doc.get("data", b""), (bytes, str), f"{path}.data", "bytes or text")
        truncated = expect_field(doc.get("inputTruncated", False), bool, f"{path}.inputTruncated", "a bool")
        return Body(data.encode() if isinstance(data, str) else data, truncated)
    data = expect_field(doc, (bytes, str), path, "bytes or text")
    return Body(data.encode() if isinstance(data, str) else data)


def _decode_status(value: Any, path: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    expect_field(value, int, path, "an integer (or a decimal string)")
    if not 200 <= value <= 599:
        raise ResultError(f"{path} {value} is outside 200..599")
    return int(value)


_RESPONSE_KEYS = frozenset({"status", "statusDescription", "headers", "body"})


_REQUEST_KEYS = frozenset({"uri", "querystring", "method", "headers", "body", "origin", "clientIp"})


def decode_response(doc: dict[str, Any], incoming: EdgeResponse | None = None, path: str = "result") -> EdgeResponse:
    """A result response; in response triggers an absent field keeps the `incoming` value (`incoming`
    itself when the result changes nothing, so callers can tell an unchanged response by identity)."""
    if incoming is not None and len(doc) == 1 and type(doc.get("status")) is int and doc["status"] == incoming.status:
        return incoming
    check_keys(doc, _RESPONSE_KEYS, path)
    base = incoming or EdgeResponse(200)
    status = _decode_status(doc["status"], f"{path}.status")
    description = expect_field(doc.get("statusDescription", base.status_description), str, f"{path}.statusDescription", "text")
    headers = decode_headers(doc["headers"], f"{path}.headers") if "headers" in doc else dict(base.headers)
    body = _decode_body(doc["body"], f"{path}.body") if "body" in doc else base.body
    return EdgeResponse(status, description, headers, body)


def apply_request(doc: dict[str, Any], incoming: EdgeRequest, path: str) -> EdgeRequest:
    check_keys(doc, _REQUEST_KEYS, path)
    changes: dict[str, Any] = {}
    if "uri" in doc:
        uri = expect_field(doc["uri"], str, f"{path}.uri", "text")
        if not uri.startswith("/") or _BAD_VALUE_CHARS.search(uri) or " " in uri:
            raise ResultError(f"{path}.uri {uri!r} must start with '/' and contain no spaces or control characters")
        changes["uri"] = uri
    if "querystring" in doc:
        qs = expect_field(doc["querystring"], str, f"{path}.querystring", "text")
        if _BAD_VALUE_CHARS.search(qs) or " " in qs:
            raise ResultError(f"{path}.querystring contains spaces or control characters")
        changes["querystring"] = qs.removeprefix("?")
    if "method" in doc:
        method = expect_field(doc["method"], str, f"{path}.method", "text")
        if not re.fullmatch(r"[A-Z]+", method):
            raise ResultError(f"{path}.method {method!r} must be an upper-case HTTP method")
        changes["method"] = method
    if "clientIp" in doc:
        ip = expect_field(doc["clientIp"], str, f"{path}.clientIp", "text")
        if ip != incoming.client_ip:
            raise ResultError(f"{path}.clientIp is read-only")
    if "headers" in doc:
        changes["headers"] = decode_headers(doc["headers"], f"{path}.headers")
    if "body" in doc:
        body = expect_field(doc["body"], dict, f"{path}.body", 'a map {"action", "data"}')
        check_keys(body, frozenset({"action", "data", "inputTruncated", "encoding"}), f"{path}.body")
        action = body.get("action", "read-only")
        if action == "replace":
            data = expect_field(body.get("data", b""), (bytes, str), f"{path}.body.data", "bytes or text")
            changes["body"] = Body(data.encode() if isinstance(data, str) else data)
        elif action != "read-only":
            raise ResultError(f"{path}.body.action {action!r} must be 'replace' or 'read-only'")
    if "origin" in doc:
        changes["origin"] = expect_field(doc["origin"], dict, f"{path}.origin", "a map")
    return replace(incoming, **changes) if changes else incoming


def _body_from_json(doc: dict[str, Any], path: str) -> Body:
    expect_field(doc, dict, path, 'a map {"data", "encoding"?, "inputTruncated"?}')
    data = expect_field(doc.get("data", ""), (str, bytes), f"{path}.data", "text or bytes")
    if doc.get("encoding", "text") == "base64":
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise ResultError(f"{path}.data is not valid base64: {exc}") from None
    else:
        raw = data.encode() if isinstance(data, str) else data
    return Body(raw, bool(doc.get("inputTruncated", False)))


def event_from_document(doc: dict[str, Any]) -> Event:
    """Build an Event from its document form: CBOR-decoded, or JSON with text/base64 bodies; bare, or in
    Lambda@Edge's own envelope ({"Records": [{"cf": ...}]})."""
    doc = _unwrapped(doc)
    try:
        cfg = expect_field(doc.get("config", {}), dict, "config", "a map")
        event_type = cfg.get("eventType", "viewer-request")
        if event_type not in EVENT_TYPES:
            raise ResultError(f"config.eventType {event_type!r} must be one of {', '.join(EVENT_TYPES)}")
        config = EventConfig(
            event_type=event_type,
            request_id=expect_field(cfg.get("requestId", ""), str, "config.requestId", "text"),
            function_name=expect_field(cfg.get("functionName", ""), str, "config.functionName", "text"),
            distribution_domain_name=expect_field(cfg.get("distributionDomainName", ""), str, "config.distributionDomainName", "text"),
            distribution_id=expect_field(cfg.get("distributionId", ""), str, "config.distributionId", "text"),
        )
        r = expect_field(doc["request"], dict, "request", "a map")
        request = EdgeRequest(
            method=expect_field(r.get("method", "GET"), str, "request.method", "text"),
            uri=expect_field(r.get("uri", "/"), str, "request.uri", "text"),
            querystring=expect_field(r.get("querystring", ""), str, "request.querystring", "text"),
            headers=decode_headers(r.get("headers", {}), "request.headers"),
            client_ip=expect_field(r.get("clientIp", "127.0.0.1"), str, "request.clientIp", "text"),
            body=_body_from_json(r["body"], "request.body") if "body" in r else None,
            origin=expect_field(r["origin"], dict, "request.origin", "a map") if r.get("origin") is not None else None,
        )
        response = None
        if "response" in doc:
            s = expect_field(doc["response"], dict, "response", "a map")
            response = EdgeResponse(
                status=_decode_status(s.get("status", 200), "response.status"),
                status_description=expect_field(s.get("statusDescription", ""), str, "response.statusDescription", "text"),
                headers=decode_headers(s.get("headers", {}), "response.headers"),
                body=_body_from_json(s["body"], "response.body") if "body" in s else None,
            )
    except (KeyError, AttributeError, TypeError) as exc:
        raise ResultError(f"malformed event document: {type(exc).__name__} {exc}") from None
    return Event(config, request, response)


#: the deepest nesting a JSON document from a client may have (events are a few levels deep)
MAX_JSON_DEPTH = 64


def json_document(payload: bytes | str) -> Any:
    """Parse client JSON with bounded nesting: ValueError (with a message for the client) otherwise."""
    try:
        doc = json.loads(payload)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return doc


def _unwrapped(doc: Any) -> Any:
    """The event in Lambda@Edge's envelope {"Records": [{"cf": {...}}]} (what the AWS console, SAM and
    `aws lambda invoke` send), or `doc` itself when it is the bare event."""
    if not isinstance(doc, dict) or "Records" not in doc or "request" in doc:
        return doc
    records = doc["Records"]
    if not isinstance(records, list) or len(records) != 1 or not isinstance(records[0], dict) or not isinstance(records[0].get("cf"), dict):
        raise ResultError('Records must be a list of one {"cf": {"config", "request", "response"?}} (Lambda@Edge\'s event shape)')
    return records[0]["cf"]


def event_from_json(payload: bytes) -> Event:
    """An event document sent as JSON (the invoke API, the async queue), bare or in Lambda@Edge's envelope;
    ResultError says what is wrong."""
    try:
        doc = _unwrapped(json_document(payload))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and too deep alike
        if isinstance(exc, ResultError):
            raise
        raise ResultError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
        raise ResultError('expected a JSON object {"config"?, "request", "response"?} with "request" an object (see edgefn events sample)')
    event = event_from_document(doc)
    if event.config.event_type not in REQUEST_EVENTS and event.response is None:
        raise ResultError(f'a {event.config.event_type} event needs a "response" object')
    return event


def _body_to_json(body: Body) -> dict[str, Any]:
    try:
        return {"data": body.data.decode(), "encoding": "text", "inputTruncated": body.input_truncated}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(body.data).decode(), "encoding": "base64", "inputTruncated": body.input_truncated}


def to_json_document(item: Event | EdgeRequest | EdgeResponse) -> dict[str, Any]:
    """The JSON form of an event or a result: bodies as text when they are UTF-8, else base64."""
    if isinstance(item, Event):
        doc = event_document(item)
        for part in ("request", "response"):
            if part in doc and "body" in doc[part]:
                doc[part]["body"] = _body_to_json(getattr(item, part).body)
        return doc
    if isinstance(item, EdgeRequest):
        doc = _request_doc(item)
    else:
        doc = _response_doc(item)
    if item.body is not None:
        doc["body"] = _body_to_json(item.body)
    return doc


#: how edgefn names itself in X-Cache ("Hit from edgefn")
VIA = "edgefn"


class XCache(StrEnum):
    """The X-Cache outcomes the pipeline reports (CloudFront's vocabulary)."""

    HIT = "Hit"
    MISS = "Miss"
    REFRESH_HIT = "RefreshHit"
    LAMBDA_GENERATED = "LambdaGeneratedResponse"
    ERROR = "Error"

    @property
    def header_value(self) -> str:
        return f"{self.value} from {VIA}"


def sample_event(event_type: str, request_id: str) -> Event:
    """A valid, realistic event of `event_type`: what `edgefn events sample` prints and `edgefn bench` sends."""
    request = EdgeRequest(
        method="GET",
        uri="/index.html",
        querystring="lang=en",
        headers={
            "host": [("Host", "d111111abcdef8.cloudfront.net")],
            "user-agent": [("User-Agent", "curl/8.5.0")],
            "accept": [("Accept", "*/*")],
        },
        client_ip="203.0.113.178",
    )
    response = None
    if event_type in ("origin-response", "viewer-response"):
        response = EdgeResponse(
            200, "OK", {"content-type": [("Content-Type", "text/html; charset=utf-8")], "cache-control": [("Cache-Control", "max-age=60")]}
        )
    if event_type == "origin-request":
        request.origin = {"custom": {"domainName": "example.org", "port": 443, "protocol": "https", "path": "", "readTimeout": 30, "keepaliveTimeout": 5, "customHeaders": {}}}
    config = EventConfig(
        cast(EventType, event_type), request_id, "", distribution_domain_name="d111111abcdef8.cloudfront.net", distribution_id="EDFDVBD6EXAMPLE"
    )
    return Event(config, request, response)
