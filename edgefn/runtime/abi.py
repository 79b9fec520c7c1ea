"""Guest ABI v1 on the wire: the names a v1 module exports, and events and results as CBOR (for a Python
component, as marshal).

See guest-sdk/ABI.md. `encode_event` turns a core.events.Event into the bytes a guest reads, and
`decode_result` turns the guest's bytes back into a request or a response, checking every field (the
document form is core.events'; only the crossing, CBOR or marshal, is here).
"""

from __future__ import annotations

import io
import marshal
from typing import Literal

import cbor2

from ..core.events import (
    REQUEST_EVENTS,
    EdgeRequest,
    EdgeResponse,
    Event,
    ResultError,
    apply_request,
    check_keys,
    decode_response,
    event_document,
    event_from_document,
    expect_field,
)
from . import _native

__all__ = [
    "ABI_VERSION", "ALLOC_EXPORT", "HANDLE_EXPORT", "HOST_MODULE", "INIT_EXPORT", "VERSION_EXPORT_PREFIX", "WASI_MODULE",
    "DocumentEncoding", "GuestFunctionError", "decode_event", "decode_result", "encode_event",
]

ABI_VERSION = 1


HOST_MODULE = "edgefn:host/v1"


WASI_MODULE = "wasi_snapshot_preview1"


VERSION_EXPORT_PREFIX = "edgefn_abi_v"


ALLOC_EXPORT = "edgefn_alloc"


HANDLE_EXPORT = "edgefn_handle"


INIT_EXPORT = "_initialize"


class GuestFunctionError(Exception):
    """The result document was a function error ({"errorType", "errorMessage"})."""

    def __init__(self, error_type: str, error_message: str) -> None:
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(f"{error_type}: {error_message}")


#: CBOR for every guest; "marshal" for a Python component's handle-marshal, whose event and result CPython
#: encodes and decodes in C where its CBOR codec is Python (a warm Python hello on bench/micro's typical event:
#: 977,373 -> 412,588 instructions of fuel with a marshal event; docs/performance.md for the result's share)
DocumentEncoding = Literal["cbor", "marshal"]

#: the first byte of a marshal dict (with and without FLAG_REF); no CBOR map starts with either
_MARSHAL_DICT = (0x7B, 0xFB)


def encode_event(event: Event, encoding: DocumentEncoding = "cbor") -> bytes:
    if encoding == "marshal":
        # format 2: no interned strings, which the guest's marshal.loads would intern one by one (~a quarter of its decode)
        return marshal.dumps(event_document(event), 2)
    return _native.cbor_encode(event_document(event))  # cbor2.dumps's bytes, in C (~2 µs instead of ~30)


def decode_result(raw: bytes, event: Event, encoding: DocumentEncoding = "cbor") -> EdgeRequest | EdgeResponse:
    """Parse a guest's result for `event`. Raises ResultError or GuestFunctionError.

    A "marshal" result is read by _native's strict reader (the guest is not trusted; CPython's marshal.loads is
    not meant for such bytes). One that does not start as a marshal dict is CBOR: what handle-marshal answered
    in components built before its results were marshal too (BUILD_FORMAT 2), which stay deployable."""
    if encoding == "marshal" and raw[:1] and raw[0] in _MARSHAL_DICT:
        try:
            doc = _native.marshal_decode(raw)
        except ValueError as exc:
            raise ResultError(f"not a marshal document ({exc})") from None
    else:
        doc = _cbor_result(raw)
    expect_field(doc, dict, "result", "a map")
    if "errorType" in doc:
        check_keys(doc, frozenset({"errorType", "errorMessage"}), "result")
        error_type = expect_field(doc["errorType"], str, "result.errorType", "text")
        message = expect_field(doc.get("errorMessage", ""), str, "result.errorMessage", "text")
        raise GuestFunctionError(error_type, message)
    if "status" in doc:
        return decode_response(doc, event.response)
    if event.config.event_type not in REQUEST_EVENTS:
        raise ResultError(f"a {event.config.event_type} function must return a response (a map with 'status')")
    return apply_request(doc, event.request, "result")


def _cbor_result(raw: bytes) -> object:
    doc = _native.cbor_decode(raw)  # the common, well-formed result in C; cbor2 decides everything else
    if doc is NotImplemented:
        stream = io.BytesIO(raw)
        try:
            doc = cbor2.CBORDecoder(stream).decode()
        except Exception as exc:  # cbor2 raises several types, all meaning "not one CBOR item"
            raise ResultError(f"not a CBOR document ({type(exc).__name__}: {exc})") from None
        if stream.tell() != len(raw):
            raise ResultError(f"not a CBOR document: {len(raw) - stream.tell()} trailing bytes after the first item")
    return doc


def decode_event(raw: bytes) -> Event:
    """Parse an event document (the inverse of encode_event); used for recorded events and tests."""
    return event_from_document(cbor2.loads(raw))


def decode_document(raw: bytes) -> object:
    """One CBOR item a guest answered outside the event ABI (a runtime component's load answer); None if not one."""
    try:
        return cbor2.loads(raw)
    except Exception:  # cbor2 raises several types, all meaning "not one CBOR item"
        return None
