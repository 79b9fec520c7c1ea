"""What a polled batch looks like to the function, and what it answers: Lambda's shapes for these services.

A batch arrives as the body of a POST (a viewer-request-shaped event, as a schedule's tick does) to
`/_edgefn/event-source/UUID`, with the header `x-edgefn-event-source: UUID`. Its JSON is `{"Records": [...]}`:
SQS's record shape for a queue (messageId, receiptHandle, body, attributes.ApproximateReceiveCount, ...), Kinesis's
for a stream (kinesis.data base64, sequenceNumber, partitionKey, ...). With `report_batch_item_failures`, the
function may answer `{"batchItemFailures": [{"itemIdentifier": ID}]}` (the messageId or the sequenceNumber): only
those records failed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ...core import events
from ...core.app import EventSourceSpec

__all__ = [
    "EVENT_SOURCE_HEADER", "EVENT_SOURCE_URI_PREFIX", "MAX_BATCH_BYTES", "BatchAnswer", "QueueMessage", "StreamRecord", "batch_answer", "batch_event",
    "queue_record", "stream_failure_info", "stream_record",
]

EVENT_SOURCE_URI_PREFIX = "/_edgefn/event-source/"
EVENT_SOURCE_HEADER = "x-edgefn-event-source"
#: a batch stops growing before its document passes this (Lambda: 6 MB for a synchronous invocation)
MAX_BATCH_BYTES = 5 * 1024 * 1024
REGION = "local"


@dataclass(frozen=True)
class QueueMessage:
    """One message as the queue poller received it."""

    message_id: str
    body: bytes
    receive_count: int
    sent_at_ms: int
    first_received_at_ms: int
    headers: dict[str, str] = field(default_factory=dict)
    handle: str = ""


@dataclass(frozen=True)
class StreamRecord:
    """One stream entry: its shard (the stream key), sequence number (the entry id) and data."""

    shard: str
    sequence: str
    data: bytes
    partition_key: str

    @property
    def arrived_at(self) -> float:
        """When the broker added it: a Redis stream id starts with its milliseconds."""
        return int(self.sequence.split("-")[0]) / 1000


def queue_record(mapping: EventSourceSpec, m: QueueMessage) -> dict[str, Any]:
    try:
        body, encoding = m.body.decode("utf-8"), None
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(m.body).decode(), "base64"
    attributes = {
        "ApproximateReceiveCount": str(m.receive_count), "SentTimestamp": str(m.sent_at_ms),
        "ApproximateFirstReceiveTimestamp": str(m.first_received_at_ms),
    }
    if encoding:
        attributes["BodyEncoding"] = encoding
    return {
        "messageId": m.message_id, "receiptHandle": m.handle or m.message_id, "body": body, "attributes": attributes,
        "messageAttributes": {k: {"stringValue": v, "dataType": "String"} for k, v in m.headers.items()},
        "md5OfBody": hashlib.md5(m.body, usedforsecurity=False).hexdigest(), "eventSource": "edgefn:rabbitmq",
        "eventSourceARN": mapping.arn, "awsRegion": REGION,
    }


def stream_record(mapping: EventSourceSpec, r: StreamRecord) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0", "partitionKey": r.partition_key, "sequenceNumber": r.sequence,
            "data": base64.b64encode(r.data).decode(), "approximateArrivalTimestamp": r.arrived_at,
        },
        "eventSource": "edgefn:redis-streams", "eventVersion": "1.0", "eventID": f"{r.shard}:{r.sequence}",
        "eventName": "edgefn:redis-streams:record", "invokeIdentityArn": "", "awsRegion": REGION, "eventSourceARN": mapping.arn,
    }


def batch_event(mapping: EventSourceSpec, records: list[dict[str, Any]], request_id: str) -> events.Event:
    """The event a batch is delivered in."""
    request = events.EdgeRequest(
        method="POST",
        uri=EVENT_SOURCE_URI_PREFIX + mapping.uuid,
        headers={
            EVENT_SOURCE_HEADER: [(events.title_case(EVENT_SOURCE_HEADER), mapping.uuid)],
            "content-type": [("Content-Type", "application/json")],
        },
        body=events.Body(json.dumps({"Records": records}).encode()),
    )
    return events.Event(events.EventConfig("viewer-request", request_id, mapping.function.partition(":")[0]), request)


@dataclass(frozen=True)
class BatchAnswer:
    """What the function's answer says of its batch: the item identifiers it failed, or that its answer is unusable."""

    failed: frozenset[str] = frozenset()
    problem: str | None = None


def batch_answer(result: events.EdgeRequest | events.EdgeResponse | None, ids: set[str]) -> BatchAnswer:
    """Read `{"batchItemFailures": [...]}` from the function's response body. As Lambda does, an answer naming an
    identifier not in the batch, or not an object of that shape, fails the whole batch; no body, or no list, is success."""
    body = result.body.data if isinstance(result, events.EdgeResponse) and result.body is not None else b""
    if not body.strip():
        return BatchAnswer()
    try:
        doc = json.loads(body)
    except ValueError:
        return BatchAnswer()  # not JSON: a function that reports nothing
    failures = doc.get("batchItemFailures") if isinstance(doc, dict) else None
    if failures is None:
        return BatchAnswer()
    if not isinstance(failures, list):
        return BatchAnswer(problem="batchItemFailures is not a list")
    failed = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident not in ids:
            return BatchAnswer(problem=f"batchItemFailures names {ident!r}, which is not in the batch")
        failed.add(ident)
    return BatchAnswer(frozenset(failed))


def stream_failure_info(mapping: EventSourceSpec, records: list[StreamRecord]) -> dict[str, Any]:
    """Lambda's KinesisBatchInfo: which records of which shard an on-failure record is about."""
    return {
        "shardId": records[0].shard, "startSequenceNumber": records[0].sequence, "endSequenceNumber": records[-1].sequence,
        "approximateArrivalOfFirstRecord": _iso(records[0].arrived_at), "approximateArrivalOfLastRecord": _iso(records[-1].arrived_at),
        "batchSize": len(records), "streamArn": mapping.arn,
    }


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
