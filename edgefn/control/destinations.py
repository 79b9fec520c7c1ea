"""Where the record of an asynchronous invocation goes: another function, an HTTP endpoint, or the dead-letter store.

The record has Lambda's destination shape (reference §3.2). Sending it happens inside the transaction that
removes the event from the queue, so an outcome is never lost or sent twice by one worker: a function
destination gets a new queued event, an HTTP destination a queued POST (delivered, with retries, by the
queue's workers), the dead-letter store a row.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from ..core.ports import QueueWork
from ..core.records import FunctionRef, QueuedEvent
from .store.queue import MAX_PAYLOAD_BYTES

SUCCESS = "Success"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"

DLQ = "dlq"


@dataclass(frozen=True)
class Destination:
    """A parsed `on_success` / `on_failure` value (the manifest checked its form)."""

    kind: str  # "function" | "http" | "dlq"
    target: str  # the function reference, the URL, or "dlq"

    @classmethod
    def parse(cls, text: str) -> "Destination":
        if text.startswith("function:"):
            return cls("function", text.removeprefix("function:"))
        if text.startswith(("http://", "https://")):
            return cls("http", text)
        return cls(DLQ, DLQ)

    def __str__(self) -> str:
        return f"function:{self.target}" if self.kind == "function" else self.target


def function_arn(ref: str) -> str:
    parsed = FunctionRef.parse(ref)
    return f"edgefn:function:{parsed.name}:{parsed.qualifier}"


def build_record(event: QueuedEvent, condition: str, outcome: dict[str, Any] | None, invoke_count: int) -> dict[str, Any]:
    """The destination record of `event`; `outcome` is the last attempt's {responseContext, responsePayload}
    (None when the function never ran: statusCode 0)."""
    outcome = outcome or {"responseContext": {"statusCode": 0, "executedVersion": None}, "responsePayload": None}
    return {
        "version": "1.0",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": event.id,
            "functionArn": function_arn(event.target),
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": json.loads(event.payload),
        "responseContext": outcome["responseContext"],
        "responsePayload": outcome["responsePayload"],
    }


def record_event(record: dict[str, Any]) -> bytes:
    """The event a function destination receives: a POST whose JSON body is the record.

    A record too large for an asynchronous event loses its response payload, then its request payload."""
    for dropped in ((), ("responsePayload",), ("responsePayload", "requestPayload")):
        body = json.dumps({**record, **{key: None for key in dropped}})
        doc = {
            "config": {"eventType": "viewer-request"},
            "request": {
                "method": "POST",
                "uri": "/",
                "headers": {"content-type": [{"key": "Content-Type", "value": "application/json"}]},
                "body": {"data": body, "encoding": "text"},
            },
        }
        payload = json.dumps(doc).encode()
        if len(payload) <= MAX_PAYLOAD_BYTES:
            return payload
    raise AssertionError("a record without payloads always fits")  # its other fields are a few hundred bytes


def send(work: QueueWork, destination: Destination, event: QueuedEvent, record: dict[str, Any]) -> str:
    """Hand `record` to `destination` inside the caller's unit of work; returns what was done, for the log."""
    if destination.kind == "function":
        new_id = work.enqueue(destination.target, record_event(record), source=f"destination:{event.id}")
        return f"queued for function {destination.target} as {new_id}"
    if destination.kind == "http":
        work.add_post(destination.target, event.function, record, event.id)
        return f"queued for POST to {destination.target}"
    work.park(event, record, record["requestContext"]["condition"])
    return "kept in the dead-letter store"
