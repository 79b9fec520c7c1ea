"""A RabbitMQ queue as an event source, through aio-pika, in the SQS model.

Each consumer has its own channel with `prefetch = batch_size` and gathers a batch (up to batch_size, or
what arrived within maximum_batching_window_s). A message is acked only after its batch succeeded. A failed
one (the whole batch, or an item the function named in batchItemFailures) is republished to the queue's
retry queue `QUEUE.edgefn-retry` with its receive count in a header and the visibility timeout as its
expiration; RabbitMQ dead-letters it back to QUEUE when that runs out (the visibility timeout), and only
then, with the copy confirmed, is the original acked. After max_receive_count receives it goes to
on_failure instead. Consumers scale from one to maximum_concurrency while the ready backlog exceeds a
batch per consumer, and back down once the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from ...core.app import EventSourceSpec
from ..catalog import wait_any
from . import MAX_RECEIVES, BatchRunner, documents

__all__ = ["RECEIVE_COUNT_HEADER", "QueuePoller", "retry_queue_of"]

log = logging.getLogger("edgefn.control.event_sources")

RECEIVE_COUNT_HEADER = "x-edgefn-receive-count"
FIRST_RECEIVED_HEADER = "x-edgefn-first-received"
#: how long an empty queue keeps an extra consumer
SCALE_DOWN_AFTER_S = 5.0
CONNECT_TIMEOUT_S = 10.0


def retry_queue_of(queue: str) -> str:
    return f"{queue}.edgefn-retry"


class QueuePoller:
    """Consumers of one RabbitMQ queue for one mapping (see the module docstring)."""

    def __init__(self, mapping: EventSourceSpec) -> None:
        assert mapping.queue is not None
        self.mapping = mapping
        self.queue = mapping.queue

    async def run(self, runner: BatchRunner, halt: asyncio.Event) -> None:
        connection = await aio_pika.connect_robust(self.mapping.source, timeout=CONNECT_TIMEOUT_S)
        consumers: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        try:
            control = await connection.channel()
            await control.declare_queue(self.queue, durable=True)
            await control.declare_queue(
                retry_queue_of(self.queue), durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue},
            )
            empty_since: float | None = None
            while not halt.is_set():
                for t, _ in consumers:
                    if t.done() and not t.cancelled() and t.exception() is not None:  # its batch goes back to the queue
                        log.error("event source %s: a consumer of %s stopped: %r; starting another", self.mapping.uuid, self.queue, t.exception())
                consumers = [(t, h) for t, h in consumers if not t.done()]
                # (a passive declare answers 0 through aio-pika's robust channel: the durable one counts)
                depth = (await control.declare_queue(self.queue, durable=True)).declaration_result.message_count or 0
                if not consumers or (depth > self.mapping.batch_size * len(consumers) and len(consumers) < self.mapping.maximum_concurrency):
                    stop_one = asyncio.Event()
                    consumers.append((asyncio.create_task(self._consume(connection, runner, stop_one)), stop_one))
                    if len(consumers) > 1:
                        log.info("event source %s: %d ready in %s, %d consumers", self.mapping.uuid, depth, self.queue, len(consumers))
                empty_since = (empty_since or time.monotonic()) if depth == 0 else None
                if empty_since is not None and time.monotonic() - empty_since > SCALE_DOWN_AFTER_S and len(consumers) > 1:
                    consumers[-1][1].set()  # the newest consumer finishes its batch and leaves
                    empty_since = time.monotonic()
                await wait_any(halt, None, 1.0)
        finally:
            for _, stop_one in consumers:
                stop_one.set()
            if consumers:
                await asyncio.wait([t for t, _ in consumers], timeout=30)
            with contextlib.suppress(Exception):
                await connection.close()

    async def _consume(self, connection: AbstractRobustConnection, runner: BatchRunner, halt: asyncio.Event) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.mapping.batch_size)
        queue = await channel.declare_queue(self.queue, passive=True)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(inbox.put, no_ack=False)
        loop = asyncio.get_running_loop()
        try:
            while not halt.is_set():
                try:
                    first = await asyncio.wait_for(inbox.get(), 0.5)
                except asyncio.TimeoutError:
                    continue
                batch, size = [first], first.body_size
                deadline = loop.time() + self.mapping.maximum_batching_window_s
                while len(batch) < self.mapping.batch_size and size < documents.MAX_BATCH_BYTES:
                    try:
                        message = inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        try:
                            message = await asyncio.wait_for(inbox.get(), remaining)
                        except asyncio.TimeoutError:
                            break
                    batch.append(message)
                    size += message.body_size
                await self._process(channel, runner, batch)
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            while not inbox.empty():  # prefetched, never handed to the function: back to the queue as they were
                with contextlib.suppress(Exception):
                    await inbox.get_nowait().nack(requeue=True)
            with contextlib.suppress(Exception):
                await channel.close()

    async def _process(self, channel: AbstractChannel, runner: BatchRunner, batch: list[AbstractIncomingMessage]) -> None:
        now_ms = int(time.time() * 1000)
        received = [_received(m, now_ms) for m in batch]
        records = [documents.queue_record(self.mapping, r) for r in received]
        outcome = await runner.invoke(records, [r.message_id for r in received])
        retried, final = 0, []
        for message, r, record in zip(batch, received, records, strict=True):
            if r.message_id not in outcome.failed:
                await message.ack()
            elif r.receive_count >= self.mapping.max_receive_count:
                final.append((message, record))
            else:
                await self._hide(channel, message, r)
                retried += 1
        if final:
            await runner.send_on_failure([record for _, record in final], MAX_RECEIVES, outcome, max(r.receive_count for r in received))
            for message, _ in final:
                await message.ack()
        if outcome.ok:
            result = "OK"
        elif outcome.error is None:
            result = f"PARTIAL: {len(outcome.failed)} of {len(batch)} records failed"
        else:
            result = f"PROBLEM: {outcome.error}"
        await runner.count(
            result, records=len(batch), failed=len(outcome.failed), retried=retried, redelivered=sum(1 for m in batch if m.redelivered),
            sent_on_failure=len(final),
        )

    async def _hide(self, channel: AbstractChannel, message: AbstractIncomingMessage, r: documents.QueueMessage) -> None:
        """Receive `message` again after the visibility timeout: a confirmed copy with its count goes to the retry
        queue (or straight back, with no timeout), then the original is acked."""
        headers: dict[str, Any] = dict(message.headers or {})
        headers[RECEIVE_COUNT_HEADER] = r.receive_count
        headers[FIRST_RECEIVED_HEADER] = r.first_received_at_ms
        visibility = self.mapping.visibility_timeout_s
        copy = aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type, content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=r.message_id, timestamp=message.timestamp,
            expiration=visibility if visibility > 0 else None,
        )
        route = retry_queue_of(self.queue) if visibility > 0 else self.queue
        await channel.default_exchange.publish(copy, routing_key=route)
        await message.ack()


def _received(m: AbstractIncomingMessage, now_ms: int) -> documents.QueueMessage:
    headers = m.headers or {}
    before = headers.get(RECEIVE_COUNT_HEADER)
    # a redelivery by the broker (the consumer went away with it unacked) was a receive the header never saw
    count = (int(before) if isinstance(before, int) else 0) + 1 + (1 if m.redelivered else 0)
    first = headers.get(FIRST_RECEIVED_HEADER)
    sent = int(m.timestamp.timestamp() * 1000) if m.timestamp is not None else now_ms
    return documents.QueueMessage(
        message_id=m.message_id or str(uuid.uuid4()), body=m.body, receive_count=count, sent_at_ms=sent,
        first_received_at_ms=int(first) if isinstance(first, int) else now_ms,
        headers={k: str(v) for k, v in headers.items() if not k.startswith("x-edgefn-") and not k.startswith("x-death")},
        handle=f"{m.consumer_tag}:{m.delivery_tag}",
    )
