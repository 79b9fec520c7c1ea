"""Asynchronous invocation (Lambda's Event invocation type): submit to the durable queue, deliver with workers.

`submit` commits the event before it returns. Each server runs `queue.workers` delivery workers; a worker
leases one due event, invokes the function with the attempt number in `x-edgefn-attempt`, and then, in one
transaction, either puts the event back (a function error with retries left, or a throttle) or removes it
and sends its record to the function's destination. Delivery is at least once: a server killed mid-invocation
leaves a lease that expires, and the event runs again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core import events
from ..core.app import FunctionSpec, QueueSettings
from ..core.exceptions import (
    EdgefnError,
    FunctionPending,
    InvalidPayload,
    InvocationError,
    PayloadTooLarge,
    StorageError,
    Throttled,
    UnknownFunction,
    error_document,
    status_by_class,
)
from ..core.lazy import Lazy
from ..core.ports import EventQueue, QueueWork
from ..core.records import POST, QueuedEvent
from ..core.tracing import TRACEPARENT, UNTRACED, TraceContext, Tracer
from ..manifest.schema import AsyncInvokeConfig
from ..runtime.invoker import Invoker, function_logger
from .catalog import LiveCatalog, wait_any
from .destinations import (
    DLQ,
    EVENT_AGE_EXCEEDED,
    RETRIES_EXHAUSTED,
    SUCCESS,
    Destination,
    build_record,
    send,
)
from .store.queue import check_payload

__all__ = ["AsyncInvoker", "InvalidPayload", "PayloadTooLarge", "ATTEMPT_HEADER"]

log = logging.getLogger("edgefn.control.async")

ATTEMPT_HEADER = "x-edgefn-attempt"
#: a lease outlives the function's timeout by this much (and is renewed while the invocation runs)
LEASE_MARGIN_S = 2.0
#: POSTs of a record to an HTTP destination before it goes to the dead-letter store
DESTINATION_ATTEMPTS = 5
DESTINATION_TIMEOUT_S = 10.0

if TYPE_CHECKING:
    import httpx


def _destination_client() -> httpx.AsyncClient:
    import httpx  # here: an app with no destination never imports it (core/lazy.py)

    return httpx.AsyncClient(timeout=DESTINATION_TIMEOUT_S, follow_redirects=False)


class AsyncInvoker:
    """Submits events to `queue` and delivers them to the functions of `catalog` through `invoker`."""

    def __init__(self, queue: EventQueue, catalog: LiveCatalog, invoker: Invoker, settings: QueueSettings) -> None:
        self.queue = queue
        self.catalog = catalog
        self.invoker = invoker
        self.settings = settings
        #: the destinations' HTTP client, made at the first POST (core/lazy.py)
        self.client: Lazy[httpx.AsyncClient] = Lazy(_destination_client)
        #: set when work may be due (a submit here, or the change feed heard one queued on another node)
        self.wake = asyncio.Event()
        #: each delivery is a consumer span, a child of the submitted event's traceparent if it has one
        self.tracer: Tracer = UNTRACED

    # --- submitting ---------------------------------------------------------------------------------

    async def submit(self, ref: str, payload: bytes, invocation_id: str | None = None) -> tuple[str, bool]:
        """Queue an event for `ref` (committed on return); (request id, whether `invocation_id` was a duplicate).

        Raises UnknownFunction, PayloadTooLarge (over 1 MB) or InvalidPayload (not an event document)."""
        check_payload(payload)
        problem = self.catalog.current.check(ref)
        if problem is not None:
            raise UnknownFunction(ref, "", problem)
        request_id, duplicate = await asyncio.to_thread(self.queue.submit, ref, payload, invocation_id=invocation_id, source="api")
        if not duplicate:
            self.wake.set()
        return request_id, duplicate

    # --- workers ------------------------------------------------------------------------------------

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The delivery workers of this server, running until `stop` is set."""
        return [asyncio.create_task(self.run_worker(stop), name=f"edgefn-async-worker-{i}") for i in range(self.settings.workers)]

    async def run_worker(self, stop: asyncio.Event) -> None:
        poll_s = self.settings.poll_interval_ms / 1000
        while not stop.is_set():
            try:
                delivered = await self.deliver_one()
                self.catalog.outage.ok()
            except StorageError as exc:  # the control plane is down: said once for the node; the leases wait in it
                self.catalog.outage.failed(exc)
                delivered = False
            except Exception:  # a storage hiccup must not end the worker: the event's lease expires and it runs again
                log.exception("asynchronous delivery failed; retrying after the poll interval")
                delivered = False
            if delivered:
                continue
            self.wake.clear()
            await wait_any(stop, self.wake, poll_s)

    async def deliver_one(self) -> bool:
        """Lease one due event and deliver it; False if none was due."""
        event = await asyncio.to_thread(self.queue.claim, self._lease_for)
        if event is None:
            return False
        if event.kind == POST:
            await self._post(event)
        else:
            await self._invoke(event)
        return True

    async def close(self) -> None:
        client = self.client.peek()
        if client is not None:
            await client.aclose()

    # --- one function event -------------------------------------------------------------------------

    def _config(self, ref: str) -> tuple[int, AsyncInvokeConfig]:
        """(timeout_ms, async settings) of what `ref` names now; defaults if it does not resolve."""
        try:
            cfg = self.catalog.current.config(ref)
        except UnknownFunction:
            return 0, AsyncInvokeConfig()
        return cfg.timeout_ms, cfg.async_invoke or AsyncInvokeConfig()

    def _lease_for(self, event: QueuedEvent) -> float:
        if event.kind == POST:
            return DESTINATION_TIMEOUT_S + LEASE_MARGIN_S
        return self._config(event.target)[0] / 1000 + LEASE_MARGIN_S

    async def _invoke(self, event: QueuedEvent) -> None:
        flog = function_logger(event.function)
        timeout_ms, cfg = self._config(event.target)
        expires_at = event.enqueued_at + cfg.max_event_age_s
        if time.time() >= expires_at:
            flog.warning("ASYNC RequestId: %s not delivered: older than max_event_age_s = %d after %d attempts", event.id, cfg.max_event_age_s, event.attempts)
            await self._finish(event, EVENT_AGE_EXCEEDED, cfg.on_failure, event.last_response, event.attempts)
            return
        attempt = event.attempts + 1
        try:
            spec = self.catalog.select(event.target, event.id)
        except (UnknownFunction, FunctionPending) as exc:  # the catalog may lag the registry, the code may still build: later
            flog.warning("ASYNC RequestId: %s %s; back on the queue", event.id, exc.detail)
            await self._back_off(event, expires_at, _failure_outcome(exc, None, exc.detail))
            return
        try:
            call = self._event(event, spec, attempt)
        except events.ResultError as exc:  # stored before validation existed, or written around it: it can never run
            flog.error("ASYNC RequestId: %s has an invalid event: %s", event.id, exc)
            await self._finish(event, RETRIES_EXHAUSTED, cfg.on_failure, _outcome(400, None, {"errorType": "InvalidRequestContentException", "errorMessage": str(exc)}), event.attempts)
            return
        flog.info("ASYNC RequestId: %s Attempt: %d Source: %s Age: %.1f s", event.id, attempt, event.source, time.time() - event.enqueued_at)
        lease = asyncio.create_task(self._keep_lease(event, timeout_ms / 1000 + LEASE_MARGIN_S))
        failure: EdgefnError | None = None
        parent = TraceContext.parse(next((v for _, v in call.request.headers.get(TRACEPARENT, ())), None))
        span = self.tracer.span(f"async {event.target}", parent, "consumer", {
            "faas.invocation_id": event.id, "edgefn.attempt": attempt, "edgefn.source": event.source, "faas.trigger": "pubsub",
        })
        call.config = replace(call.config, trace=span.context)
        try:
            done = await self.invoker.invoke(spec, call)
        except EdgefnError as exc:
            failure = exc
            span.fail(str(exc))
        finally:
            lease.cancel()  # before the outcome is written: a late renewal would find the lease gone
            span.end()
        if failure is not None and not isinstance(failure, InvocationError):  # the code cannot load: as Lambda's 502, a system error
            flog.error("ASYNC RequestId: %s Attempt: %d not run (%s); back on the queue", event.id, attempt, failure)
            await self._back_off(event, expires_at, _failure_outcome(failure, spec.version))
        elif isinstance(failure, Throttled):
            flog.warning("ASYNC RequestId: %s Attempt: %d throttled; back on the queue", event.id, attempt)
            await self._back_off(event, expires_at, _failure_outcome(failure, spec.version))
        elif isinstance(failure, InvocationError):
            outcome = _failure_outcome(failure, spec.version)
            if attempt <= cfg.max_retry_attempts:
                delays = self.settings.retry_delays_s
                delay = delays[min(attempt, len(delays)) - 1] if delays else 0.0
                flog.warning("ASYNC RequestId: %s Attempt: %d failed (%s); retry in %.1f s", event.id, attempt, failure.kind, delay)
                await self._retry(event, min(time.time() + delay, expires_at), attempt, event.throttles, outcome)
            else:
                flog.error("ASYNC RequestId: %s Attempt: %d failed (%s); retries exhausted", event.id, attempt, failure.kind)
                await self._finish(event, RETRIES_EXHAUSTED, cfg.on_failure, outcome, attempt)
        else:
            flog.info("ASYNC RequestId: %s Attempt: %d succeeded", event.id, attempt)
            await self._finish(event, SUCCESS, cfg.on_success, _outcome(200, spec.version, events.to_json_document(done.result)), attempt)

    def _event(self, event: QueuedEvent, spec: FunctionSpec, attempt: int) -> events.Event:
        """The stored event document, with the async request id and the attempt header."""
        call = events.event_from_document(json.loads(event.payload))
        call.config = replace(call.config, request_id=event.id, function_name=spec.name)
        call.request.headers = {k: v for k, v in call.request.headers.items() if k != ATTEMPT_HEADER}
        call.request.headers[ATTEMPT_HEADER] = [(events.title_case(ATTEMPT_HEADER), str(attempt))]
        return call

    async def _keep_lease(self, event: QueuedEvent, lease_s: float) -> None:
        """Renew the lease while the invocation runs (it may wait for a guest thread longer than its timeout)."""
        while True:
            await asyncio.sleep(lease_s / 3)
            if not await asyncio.to_thread(self.queue.renew, event, lease_s):
                function_logger(event.function).warning("ASYNC RequestId: %s lease lost to another worker", event.id)
                return

    async def _back_off(self, event: QueuedEvent, expires_at: float, outcome: dict[str, Any]) -> None:
        """A throttle or system error: back on the queue with exponential backoff, until the event's age runs out."""
        s = self.settings
        delay = min(s.throttle_backoff_max_s, s.throttle_backoff_min_s * 2 ** min(event.throttles, 30))
        await self._retry(event, min(time.time() + delay, expires_at), event.attempts, event.throttles + 1, outcome)

    async def _retry(self, event: QueuedEvent, due_at: float, attempts: int, throttles: int, outcome: dict[str, Any]) -> None:
        if not await asyncio.to_thread(self.queue.retry, event, due_at, attempts=attempts, throttles=throttles, last_response=outcome):
            function_logger(event.function).warning("ASYNC RequestId: %s outcome dropped: its lease was lost to another worker", event.id)

    async def _finish(self, event: QueuedEvent, condition: str, destination: str | None, outcome: dict[str, Any] | None, invoke_count: int) -> None:
        """Remove the event and send its record to `destination` (nothing when None), in one transaction."""
        flog = function_logger(event.function)
        done: list[str] = []

        def then(work: QueueWork) -> None:
            if destination is not None:
                record = build_record(event, condition, outcome, invoke_count)
                done.append(send(work, Destination.parse(destination), event, record))

        if not await asyncio.to_thread(self.queue.finish, event, then):
            flog.warning("ASYNC RequestId: %s outcome dropped: its lease was lost to another worker", event.id)
            return
        flog.info("ASYNC RequestId: %s %s: record %s", event.id, condition, done[0] if done else "not sent (no destination)")
        self.wake.set()  # a destination may have queued work

    # --- one record for an HTTP destination ----------------------------------------------------------

    async def _post(self, event: QueuedEvent) -> None:
        import httpx  # the first POST's: an app with no HTTP destination never imports it (core/lazy.py)

        flog = function_logger(event.function)
        request_id = event.source.removeprefix("destination:")
        try:
            # one bound for the whole POST (httpx's timeout is per phase): it must end inside the row's lease
            response = await asyncio.wait_for(
                self.client.get().post(event.target, content=event.payload, headers={"content-type": "application/json", "x-edgefn-request-id": request_id}),
                DESTINATION_TIMEOUT_S,
            )
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except (httpx.HTTPError, httpx.InvalidURL, asyncio.TimeoutError, OSError) as exc:  # a failed attempt, never a crashed worker
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            if await asyncio.to_thread(self.queue.finish, event):
                flog.info("ASYNC RequestId: %s record delivered to %s", request_id, event.target)
            return
        attempts = event.attempts + 1
        if attempts < DESTINATION_ATTEMPTS:
            s = self.settings
            delay = min(s.throttle_backoff_max_s, s.throttle_backoff_min_s * 2 ** (attempts - 1))
            flog.warning("ASYNC RequestId: %s record not delivered to %s (%s); retry in %.1f s", request_id, event.target, error, delay)
            await self._retry(event, time.time() + delay, attempts, event.throttles, {"error": error})
            return
        reason = f"destination {event.target} failed {attempts} times: {error}"

        def park(work: QueueWork) -> None:
            work.park(event, json.loads(event.payload), reason)

        if await asyncio.to_thread(self.queue.finish, event, park):
            flog.error("ASYNC RequestId: %s record kept in the %s store: %s", request_id, DLQ, reason)


#: the record's responseContext.statusCode per failure class (Lambda's): 200 when the function ran and failed,
#: 429 throttled, 404 not resolved, 502 its code could not be loaded (any other edgefn error before it ran)
ASYNC_STATUS: dict[type[BaseException], tuple[int, str | None]] = {
    InvocationError: (200, None),
    Throttled: (429, "TooManyRequestsException"),
    UnknownFunction: (404, "ResourceNotFoundException"),
    EdgefnError: (502, None),
}


def _failure_outcome(exc: EdgefnError, version: str | None, message: str | None = None) -> dict[str, Any]:
    """The outcome a failed attempt records: status from ASYNC_STATUS, the one errorType vocabulary."""
    status, error_type = status_by_class(ASYNC_STATUS, exc, (502, None))
    if isinstance(exc, InvocationError) and status == 200:
        return _outcome(200, version, error_document(exc), "Handled" if exc.handled else "Unhandled")
    return _outcome(status, version, {"errorType": error_type or type(exc).__name__, "errorMessage": message or str(exc)})


def _outcome(status: int, version: str | None, payload: Any, function_error: str | None = None) -> dict[str, Any]:
    """One attempt's result as a record's responseContext and responsePayload."""
    context: dict[str, Any] = {"statusCode": status, "executedVersion": version}
    if function_error is not None:
        context["functionError"] = function_error
    return {"responseContext": context, "responsePayload": payload}
