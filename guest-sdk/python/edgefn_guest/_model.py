"""Plain Python objects for Lambda@Edge events: Headers, Request, Response, Context, Event."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

#: the characters of an HTTP token (RFC 9110 section 5.6.2), lowercase: what a header name may hold
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"

TRIGGERS = ("viewer-request", "origin-request", "origin-response", "viewer-response")
REQUEST_TRIGGERS = ("viewer-request", "origin-request")

#: status -> reason phrase, made once (at build time, into the snapshot): an HTTPStatus lookup per response
#: costs more in a component than the rest of building it
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
#: lowercase name -> the title-cased spelling of a header set without one (a handful per function)
_TITLES: dict[str, str] = {}


class EdgefnUsageError(ValueError):
    """The SDK was used in a way ABI v1 cannot express (a bad header name, a wrong return type, ...)."""


def _title(name: str) -> str:
    title = _TITLES.get(name)
    if title is None:
        title = "-".join(part[:1].upper() + part[1:] for part in name.split("-"))
        if len(_TITLES) < 256:
            _TITLES[name] = title
    return title


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise EdgefnUsageError(f"header names are text, got {type(name).__name__}")
    lower = name.lower()
    # str methods, not a regex: a regex match is the dearest step of setting a header inside a component
    if not lower or not lower.isascii() or lower.strip(_TOKEN_CHARS):
        raise EdgefnUsageError(f"{name!r} is not a valid HTTP header name")
    return lower


def _check_value(name: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise EdgefnUsageError(f"header {name!r}: values are text, got {type(value).__name__}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise EdgefnUsageError(f"header {name!r}: the value contains CR, LF or NUL")
    return value


class Headers:
    """HTTP headers: names match case-insensitively, a name may repeat, the sent spelling is kept.

    >>> h = Headers({"Content-Type": "text/html"})
    >>> h["content-type"], "CONTENT-TYPE" in h
    ('text/html', True)
    >>> h.add("Set-Cookie", "a=1"); h.add("Set-Cookie", "b=2"); h.get_all("set-cookie")
    ['a=1', 'b=2']
    """

    __slots__ = ("_d",)

    def __init__(self, init: Headers | Mapping[str, Any] | Iterable[tuple[str, str]] | None = None) -> None:
        self._d: dict[str, list[tuple[str, str]]] = {}
        if init is None:
            return
        if isinstance(init, Headers):
            self._d = {name: list(entries) for name, entries in init._d.items()}
            return
        # a dict first: isinstance against an ABC is one of the dearer steps of a response inside a component
        items = init.items() if type(init) is dict or isinstance(init, Mapping) else init
        for name, value in items:
            if isinstance(value, (list, tuple)):
                for v in value:
                    self.add(name, v)
            else:
                self.add(name, value)

    # --- reading ---
    def __getitem__(self, name: str) -> str:
        entries = self._d.get(name.lower())
        if not entries:
            raise KeyError(name)
        return entries[0][1]

    def get(self, name: str, default: str | None = None) -> str | None:
        entries = self._d.get(name.lower())
        return entries[0][1] if entries else default

    def get_all(self, name: str) -> list[str]:
        return [v for _, v in self._d.get(name.lower(), [])]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def keys(self) -> list[str]:
        """The lowercase names."""
        return list(self._d)

    def items(self) -> list[tuple[str, str]]:
        """(name as sent, value) for every value of every header."""
        return [entry for entries in self._d.values() for entry in entries]

    def to_dict(self) -> dict[str, list[str]]:
        return {name: [v for _, v in entries] for name, entries in self._d.items()}

    # --- writing ---
    def __setitem__(self, name: str, value: str | list[str]) -> None:
        """Replace every value of `name` (a list sets several)."""
        lower = _check_name(name)
        values = value if isinstance(value, (list, tuple)) else [value]
        key = name if name != lower else _title(lower)
        self._d[lower] = [(key, _check_value(name, v)) for v in values]
        if not self._d[lower]:
            del self._d[lower]

    def add(self, name: str, value: str) -> None:
        """Add one more value of `name`, keeping the others."""
        lower = _check_name(name)
        key = name if name != lower else _title(lower)
        self._d.setdefault(lower, []).append((key, _check_value(name, value)))

    def __delitem__(self, name: str) -> None:
        del self._d[name.lower()]

    def pop(self, name: str, default: str | None = None) -> str | None:
        entries = self._d.pop(name.lower(), None)
        return entries[0][1] if entries else default

    def setdefault(self, name: str, value: str) -> str:
        if name not in self:
            self[name] = value
        return self[name]

    def update(self, other: Headers | Mapping[str, Any]) -> None:
        for name, values in (other.to_dict() if isinstance(other, Headers) else other).items():
            self[name] = values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._d == other._d

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    # --- ABI documents ---
    @classmethod
    def _from_document(cls, doc: Any) -> Headers:
        h = cls()
        if isinstance(doc, dict):
            for name, entries in doc.items():
                if isinstance(name, str) and isinstance(entries, list):
                    h._d[name.lower()] = [  # the title-cased name only for an entry without its own key
                        (e["key"] if "key" in e else _title(name), e.get("value", "")) for e in entries if isinstance(e, dict)
                    ]
        return h

    def _document(self) -> dict[str, list[dict[str, str]]]:
        return {name: [{"key": k, "value": v} for k, v in entries] for name, entries in self._d.items() if entries}


def _as_body(value: bytes | bytearray | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise EdgefnUsageError(f"a body is bytes or text, got {type(value).__name__}")


class _HasBody:
    _body: bytes | None

    @property
    def body(self) -> bytes | None:
        """The body as bytes (None: no body was given to the function, or none is set)."""
        return self._body

    @body.setter
    def body(self, value: bytes | str | None) -> None:
        self._body = _as_body(value)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 ("" when there is none)."""
        return (self._body or b"").decode("utf-8", "replace")


class Request(_HasBody):
    """An HTTP request as the edge sees it. Change it and return it to continue with the changes."""

    def __init__(
        self,
        method: str = "GET",
        uri: str = "/",
        querystring: str = "",
        headers: Headers | Mapping[str, Any] | None = None,
        body: bytes | str | None = None,
        origin: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.uri = uri
        self.querystring = querystring
        self._headers: Headers | None = headers if isinstance(headers, Headers) else Headers(headers)
        #: the event's headers document, made a Headers when a handler first reads `headers`
        self._headers_doc: Any = None
        self._body = _as_body(body)
        self.origin = origin
        self._client_ip = ""
        self._truncated = False
        # what the host sent, to send back only what changed
        self._orig_body: bytes | None = None
        self._orig_origin: Any = None

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers._from_document(self._headers_doc)
        return headers

    @headers.setter
    def headers(self, value: Headers | Mapping[str, Any]) -> None:
        self._headers = value if isinstance(value, Headers) else Headers(value)

    @property
    def client_ip(self) -> str:
        """The viewer's IP address (read-only)."""
        return self._client_ip

    @property
    def body_truncated(self) -> bool:
        """True if the edge cut the body to its include_body limit before the function saw it."""
        return self._truncated

    @property
    def query(self) -> dict[str, list[str]]:
        """The querystring parsed: name -> values."""
        return parse_qs(self.querystring, keep_blank_values=True)

    def __repr__(self) -> str:
        return f"Request({self.method} {self.uri}{'?' + self.querystring if self.querystring else ''})"

    @classmethod
    def _from_document(cls, doc: dict[str, Any]) -> Request:
        req = cls.__new__(cls)  # every attribute set here, without __init__'s conversions (the host's values are sound)
        req.method = doc.get("method", "GET")
        req.uri = doc.get("uri", "/")
        req.querystring = doc.get("querystring", "")
        req._headers = None  # many handlers never read them: parsed on first use
        req._headers_doc = doc.get("headers")
        req._client_ip = doc.get("clientIp", "")
        body = doc.get("body")
        if isinstance(body, dict):
            req._body = req._orig_body = body.get("data", b"")
            req._truncated = bool(body.get("inputTruncated", False))
        else:
            req._body = req._orig_body = None
            req._truncated = False
        if "origin" in doc:
            req.origin = _copy(doc["origin"])
            req._orig_origin = doc["origin"]
        else:
            req.origin = req._orig_origin = None
        return req

    def _result(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "method": self.method,
            "uri": self.uri,
            "querystring": self.querystring,
            # headers never read are sent back as they came
            "headers": self._headers._document() if self._headers is not None else _unread_document(self._headers_doc),
        }
        if self._body is not self._orig_body and self._body != self._orig_body:
            doc["body"] = {"action": "replace", "data": self._body or b""}
        if self.origin is not None and self.origin != self._orig_origin:
            doc["origin"] = self.origin
        return doc


def _unread_document(doc: Any) -> dict[str, list[dict[str, str]]]:
    return Headers._from_document(doc)._document() if doc else {}


class Response(_HasBody):
    """An HTTP response. Return one from a request trigger to answer at the edge, or from a response
    trigger to change the response (an unset body keeps the incoming one)."""

    def __init__(
        self,
        status: int = 200,
        body: bytes | str | None = None,
        headers: Headers | Mapping[str, Any] | None = None,
        status_description: str | None = None,
    ) -> None:
        self.status = status
        self._body = _as_body(body)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.status_description = status_description
        self._truncated = False
        self._orig: dict[str, Any] | None = None  # the incoming response document, in response triggers
        self._orig_body: bytes | None = None

    @property
    def body_truncated(self) -> bool:
        return self._truncated

    def __repr__(self) -> str:
        return f"Response({self.status})"

    @classmethod
    def _from_document(cls, doc: dict[str, Any]) -> Response:
        resp = cls(status=doc.get("status", 200), headers=Headers._from_document(doc.get("headers")),
                   status_description=doc.get("statusDescription", ""))
        body = doc.get("body")
        if isinstance(body, dict):
            resp._body = resp._orig_body = body.get("data", b"")
            resp._truncated = bool(body.get("inputTruncated", False))
        resp._orig = doc
        return resp

    @classmethod
    def _from_fetch(cls, doc: dict[str, Any]) -> Response:
        return cls(status=doc.get("status", 200), body=doc.get("body", b""), headers=Headers._from_document(doc.get("headers")))

    def _description(self) -> str:
        if self.status_description:
            return self.status_description
        return _PHRASES.get(self.status, "")

    def _result(self) -> dict[str, Any]:
        if not isinstance(self.status, int) or isinstance(self.status, bool):
            raise EdgefnUsageError(f"Response.status must be an int, got {self.status!r}")
        orig = self._orig
        doc: dict[str, Any] = {"status": self.status}
        if orig is None:  # a new response: everything that is set
            doc["statusDescription"] = self._description()
            doc["headers"] = self.headers._document()
            if self._body is not None:
                doc["body"] = self._body
            return doc
        # the incoming response, maybe changed: only what changed crosses back (an absent field keeps it)
        if self.status_description != orig.get("statusDescription", "") or self.status != orig.get("status"):
            doc["statusDescription"] = self.status_description if self.status_description else self._description()
        headers = self.headers._document()
        if headers != orig.get("headers", {}):
            doc["headers"] = headers
        if self._body is not self._orig_body and self._body != self._orig_body:
            doc["body"] = self._body or b""
        return doc


class Context:
    """About this invocation: the trigger, the request id, the function's name."""

    __slots__ = ("event_type", "request_id", "function_name", "distribution_domain_name", "distribution_id")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.event_type: str = doc.get("eventType", "")
        self.request_id: str = doc.get("requestId", "")
        self.function_name: str = doc.get("functionName", "")
        self.distribution_domain_name: str = doc.get("distributionDomainName", "")
        self.distribution_id: str = doc.get("distributionId", "")

    def __repr__(self) -> str:
        return f"Context({self.event_type}, request {self.request_id})"


class Event:
    """The whole event, for a generic `handler(event)`: config, request, and the response if any."""

    __slots__ = ("context", "request", "response")

    def __init__(self, context: Context, request: Request, response: Response | None) -> None:
        self.context = context
        self.request = request
        self.response = response


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
