"""Polling invocation (Lambda's event source mappings): the node reads batches from a broker and invokes functions.

    EventSourcePollers          one supervisor per [[event_sources]] entry, following its switch in the control database
    ├── QueuePoller  (rabbitmq.py)        a RabbitMQ queue, the SQS model: a message is acked only after its batch
    │                                     succeeded; a failed one is hidden for visibility_timeout_s and received
    │                                     again, and after max_receive_count receives it goes to on_failure
    └── StreamPoller (redis_streams.py)   Redis Streams, the Kinesis model: each stream a shard read in order by one
                                          poller (a lease in Redis), checkpointed (XACK) after success; a failed batch
                                          is retried (bisected, if asked), and past maximum_retry_attempts or
                                          maximum_record_age_s its records go to on_failure
    BatchRunner                 invokes a function with a batch and sends what could not be processed to on_failure

Delivery is at least once: a node killed mid-batch leaves the batch unacknowledged in the broker, and it is
delivered again (counted as redelivered). See docs/event-sources.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Coroutine

from ...core import events
from ...core.app import QUEUE_SOURCE, EventSourceSpec
from ...core.exceptions import EdgefnError, InvocationError, StorageError
from ...core.ports import EventSourceStore, QueueWork
from ...core.records import QueuedEvent
from ...core.tracing import UNTRACED, Tracer
from ...runtime.invoker import Invoker, function_logger
from ..catalog import LiveCatalog, wait_any
from ..destinations import Destination, build_record, send
from . import documents

__all__ = ["BatchOutcome", "BatchRunner", "EventSourcePollers", "documents"]

log = logging.getLogger("edgefn.control.event_sources")

#: how often a supervisor reads its mapping's switch
SWITCH_POLL_S = 1.0
#: the longest wait before a poller that failed (its broker unreachable) is started again
RESTART_MAX_S = 30.0
RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
MAX_RECEIVES = "MaxReceiveCountExceeded"


@dataclass(frozen=True)
class BatchOutcome:
    """How one invocation with a batch went: every record processed (`ok`), or which failed (`failed`, item ids;
    all of them when the invocation itself failed, with `error` saying why)."""

    ok: bool
    failed: frozenset[str]
    error: str | None
    request_id: str
    response: dict[str, Any]


class BatchRunner:
    """Invokes `mapping.function` with batches, and hands records that could not be processed to `on_failure`."""

    def __init__(self, mapping: EventSourceSpec, store: EventSourceStore, catalog: LiveCatalog, invoker: Invoker, tracer: Tracer = UNTRACED) -> None:
        self.mapping = mapping
        self.tracer = tracer
        self.store = store
        self.catalog = catalog
        self.invoker = invoker
        self.flog = function_logger(mapping.function.partition(":")[0])
        self._ids = itertools.count(1)
        #: set at each invocation: the poller reached its broker (a restart's backoff starts over)
        self.delivered = False
        self._prefix = f"esm-{os.getpid():x}-{uuid.uuid4().hex[:8]}"

    async def invoke(self, records: list[dict[str, Any]], ids: list[str]) -> BatchOutcome:
        """One invocation with `records` (whose item identifiers are `ids`)."""
        request_id = f"{self._prefix}-{next(self._ids)}"
        self.delivered = True
        every = frozenset(ids)
        event = documents.batch_event(self.mapping, records, request_id)
        self.flog.info("POLL RequestId: %s Source: %s Records: %d", request_id, self.mapping.uuid, len(records))
        span = self.tracer.span(f"event-source {self.mapping.kind} {self.mapping.uuid[:8]}", None, "consumer", {
            "faas.invocation_id": request_id, "faas.trigger": "pubsub", "messaging.batch.message_count": len(records),
            "messaging.destination.name": self.mapping.queue or ",".join(self.mapping.streams), "edgefn.event_source": self.mapping.uuid,
        })
        event.config = replace(event.config, trace=span.context)
        try:
            spec = self.catalog.select(self.mapping.function, request_id)
            done = await self.invoker.invoke(spec, event)
        except InvocationError as exc:
            span.fail(f"{exc.kind}: {exc}")
            return BatchOutcome(False, every, f"{exc.kind}: {exc}", request_id, _response(exc.error_type, str(exc)))
        except EdgefnError as exc:  # unknown or still building: as a failure of the whole batch, retried as one
            span.fail(str(exc))
            return BatchOutcome(False, every, str(exc), request_id, _response(type(exc).__name__, str(exc)))
        finally:
            span.end()
        if not self.mapping.report_batch_item_failures:
            return BatchOutcome(True, frozenset(), None, request_id, _response(None, None, spec.version))
        answer = documents.batch_answer(done.result, set(ids))
        if answer.problem is not None:
            self.flog.error("POLL RequestId: %s the whole batch failed: %s", request_id, answer.problem)
            return BatchOutcome(False, every, answer.problem, request_id, _response("InvalidBatchItemFailures", answer.problem, spec.version))
        return BatchOutcome(not answer.failed, answer.failed, None, request_id, _response(None, None, spec.version))

    async def send_on_failure(self, records: list[dict[str, Any]], condition: str, outcome: BatchOutcome | None, invokes: int,
                              extra: dict[str, Any] | None = None) -> None:
        """Send a record of `records` (a batch that will not be retried) to on_failure, in one control transaction.

        The record is Lambda's destination record; its requestPayload is the batch event, so `edgefn dlq replay`
        delivers the batch again (asynchronously)."""
        request_id = outcome.request_id if outcome is not None else f"{self._prefix}-{next(self._ids)}"
        event = documents.batch_event(self.mapping, records, request_id)
        payload = json.dumps(events.to_json_document(event)).encode()
        now = time.time()
        queued = QueuedEvent(request_id, "event", self.mapping.function, self.mapping.function.partition(":")[0], payload,
                             f"event-source:{self.mapping.uuid}", now, now, invokes, 0, None)
        record = build_record(queued, condition, outcome.response if outcome is not None else None, invokes)
        if extra:
            record.update(extra)
        destination = Destination.parse(self.mapping.on_failure)

        def then(work: QueueWork) -> None:
            done = send(work, destination, queued, record)
            self.flog.error("POLL RequestId: %s %d record(s) not processed (%s): %s", request_id, len(records), condition, done)

        await asyncio.to_thread(self.store.send_on_failure, then)

    async def count(self, result: str, **counts: int) -> None:
        try:
            await asyncio.to_thread(self.store.record, self.mapping.uuid, result, **counts)
        except StorageError as exc:  # the counters are best effort: the broker holds the truth of what is done
            log.warning("event source %s: its counters could not be written: %s", self.mapping.uuid, exc)


def _response(error_type: str | None, message: str | None, version: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": version}
    if error_type is not None:
        context["functionError"] = "Unhandled"
        return {"responseContext": context, "responsePayload": {"errorType": error_type, "errorMessage": message}}
    return {"responseContext": context, "responsePayload": None}


Poller = Callable[[BatchRunner, asyncio.Event], Coroutine[Any, Any, None]]


class EventSourcePollers:
    """Runs the app's event source mappings on this node: each supervisor starts its poller while the mapping's
    switch is on, and stops it (cleanly: nothing in flight is lost) when it goes off or the node stops."""

    def __init__(self, mappings: tuple[EventSourceSpec, ...], store: EventSourceStore, catalog: LiveCatalog, invoker: Invoker, owner: str) -> None:
        self.mappings = mappings
        self.store = store
        self.catalog = catalog
        self.invoker = invoker
        #: who holds a stream shard's lease (the node id)
        self.owner = owner
        #: each batch is a consumer span, the root of its trace
        self.tracer: Tracer = UNTRACED

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._supervise(m, stop), name=f"edgefn-event-source-{m.uuid[:8]}") for m in self.mappings]

    def _poller(self, mapping: EventSourceSpec) -> Poller:
        if mapping.kind == QUEUE_SOURCE:
            from .rabbitmq import QueuePoller

            return QueuePoller(mapping).run
        from .redis_streams import StreamPoller

        return StreamPoller(mapping, self.owner).run

    async def _supervise(self, mapping: EventSourceSpec, stop: asyncio.Event) -> None:
        runner = BatchRunner(mapping, self.store, self.catalog, self.invoker, self.tracer)
        poll = self._poller(mapping)
        task: asyncio.Task[None] | None = None
        halt = asyncio.Event()
        failures, retry_at = 0, 0.0
        try:
            while not stop.is_set():
                try:
                    on = await asyncio.to_thread(self.store.enabled, mapping.uuid)
                except StorageError as exc:  # the switch cannot be read: keep doing what it said last
                    self.catalog.outage.failed(exc)
                    on = task is not None
                if task is not None and task.done():
                    if not task.cancelled() and task.exception() is not None:
                        failures += 1  # a broker that is down: tried again after 1, 2, 4 ... up to 30 s, said each time
                        retry_at = time.monotonic() + min(2.0 ** (failures - 1), RESTART_MAX_S)
                        log.error("event source %s (%s): its poller stopped: %s; starting it again in %.0f s",
                                  mapping.uuid, mapping.safe_source, task.exception(), retry_at - time.monotonic())
                    task = None
                elif task is not None and runner.delivered:
                    failures = 0
                if on and task is None and time.monotonic() >= retry_at:
                    runner.delivered = False
                    halt = asyncio.Event()
                    task = asyncio.create_task(poll(runner, halt), name=f"edgefn-poller-{mapping.uuid[:8]}")
                    log.info("event source %s: polling %s for %s", mapping.uuid, mapping.arn, mapping.function)
                elif not on and task is not None:
                    halt.set()
                    await asyncio.wait({task})
                    task = None
                    log.info("event source %s: disabled, polling stopped", mapping.uuid)
                await wait_any(stop, None, SWITCH_POLL_S)
        finally:
            if task is not None:
                halt.set()
                await asyncio.wait({task}, timeout=30)
                if not task.done():
                    task.cancel()
