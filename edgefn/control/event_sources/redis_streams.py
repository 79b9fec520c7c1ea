"""Redis Streams as an event source, through redis-py, in the Kinesis model.

Each stream key is a shard. One poller at a time reads a shard, whichever node holds its lease (a key in
Redis, set with NX and renewed while held; a killed node's lease runs out after LEASE_S), through the consumer
group `edgefn-UUID`. Records are handed over in order, one batch at a time per shard, and acknowledged
(XACK: the checkpoint) only once their batch is done. A new owner first reads the group's pending entries,
the batch in flight when the last owner stopped, so nothing is lost (at least once; counted as redelivered).

A failed batch is retried, after a short backoff, from the first record that failed (batchItemFailures) or
whole; with bisect_batch_on_function_error a whole failure splits it in two, each half processed in turn
(a split does not count as a retry).
Past maximum_retry_attempts, or older than maximum_record_age_s, records go to on_failure with
Lambda's KinesisBatchInfo, and the shard moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ...core.app import EventSourceSpec
from ..catalog import wait_any
from . import RECORD_AGE_EXCEEDED, RETRIES_EXHAUSTED, BatchOutcome, BatchRunner, documents

__all__ = ["CONSUMER", "LEASE_S", "StreamPoller", "group_of", "lease_key_of"]

log = logging.getLogger("edgefn.control.event_sources")

#: a shard's lease: how long it outlives its holder, and how often the holder renews it
LEASE_S = 10.0
RENEW_S = LEASE_S / 4
#: the one consumer name of a group: one holder of the lease reads at a time, and a new one inherits its pending entries
CONSUMER = "edgefn"
BACKOFF_MAX_S = 2.0
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def group_of(mapping: EventSourceSpec) -> str:
    return f"edgefn-{mapping.uuid}"


def lease_key_of(mapping: EventSourceSpec, stream: str) -> str:
    return f"edgefn:event-source:{mapping.uuid}:{stream}:lease"


class StreamPoller:
    """The shard readers of one mapping on this node (see the module docstring)."""

    def __init__(self, mapping: EventSourceSpec, owner: str) -> None:
        self.mapping = mapping
        self.token = f"{owner}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.group = group_of(mapping)

    async def run(self, runner: BatchRunner, halt: asyncio.Event) -> None:
        client = aioredis.from_url(self.mapping.source, socket_timeout=30, socket_connect_timeout=10)
        slots = asyncio.Semaphore(self.mapping.maximum_concurrency)  # batches of this mapping in flight at once
        try:
            await asyncio.gather(*(self._shard(client, runner, halt, stream, slots) for stream in self.mapping.streams))
        finally:
            await client.aclose()

    async def _shard(self, client: aioredis.Redis, runner: BatchRunner, halt: asyncio.Event, stream: str, slots: asyncio.Semaphore) -> None:
        key = lease_key_of(self.mapping, stream)
        while not halt.is_set():
            if not await client.set(key, self.token, nx=True, px=int(LEASE_S * 1000)):
                await wait_any(halt, None, 1.0)  # another node reads it; its lease runs out if it dies
                continue
            lost = asyncio.Event()
            renew = asyncio.create_task(self._renew(client, key, lost, halt))
            try:
                await self._read(client, runner, halt, lost, stream, slots)
            finally:
                renew.cancel()
                with contextlib.suppress(Exception):
                    await client.eval(_RELEASE, 1, key, self.token)

    async def _renew(self, client: aioredis.Redis, key: str, lost: asyncio.Event, halt: asyncio.Event) -> None:
        while not halt.is_set():
            await wait_any(halt, None, RENEW_S)
            try:
                held = await client.eval(_RENEW, 1, key, self.token, str(int(LEASE_S * 1000)))
            except Exception as exc:  # noqa: BLE001 - a broker hiccup: try again; the lease outlives a few misses
                log.warning("event source %s: renewing the lease of %s failed: %s", self.mapping.uuid, key, exc)
                continue
            if not held:
                log.warning("event source %s: lost the lease of %s", self.mapping.uuid, key)
                lost.set()
                return

    async def _read(self, client: aioredis.Redis, runner: BatchRunner, halt: asyncio.Event, lost: asyncio.Event, stream: str, slots: asyncio.Semaphore) -> None:
        try:
            await client.xgroup_create(stream, self.group, id="$" if self.mapping.starting_position == "LATEST" else "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pending = True  # first what the group delivered and nobody acknowledged: the last owner's batch in flight
        while not halt.is_set() and not lost.is_set():
            entries = await self._next(client, stream, "0" if pending else ">", halt)
            if pending and not entries:
                pending = False
                continue
            if not entries:
                continue
            records = [documents.StreamRecord(stream, _text(i), _data(f), _partition(f, stream)) for i, f in entries if f is not None]
            gone = [_text(i) for i, f in entries if f is None]  # trimmed from the stream while pending: nothing to deliver
            if gone:
                await client.xack(stream, self.group, *gone)
            if records:
                async with slots:
                    await self._process(client, runner, records, halt, redelivered=len(records) if pending else 0)

    async def _next(self, client: aioredis.Redis, stream: str, start: str, halt: asyncio.Event) -> list[tuple[Any, Any]]:
        """Up to batch_size entries from `start` ("0": pending, ">": new), gathering new ones for up to the batching window."""
        size = self.mapping.batch_size
        answer: Any = await client.xreadgroup(self.group, CONSUMER, {stream: start}, count=size, block=None if start == "0" else 1000)
        entries: list[tuple[Any, Any]] = list(answer[0][1]) if answer else []  # RESP2: [[stream, [(id, fields), ...]]]
        if start == "0" or not entries:
            return entries
        deadline = time.monotonic() + self.mapping.maximum_batching_window_s
        while len(entries) < size and not halt.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more: Any = await client.xreadgroup(self.group, CONSUMER, {stream: ">"}, count=size - len(entries), block=remaining_ms)
            if not more:
                break
            entries.extend(more[0][1])
        return entries

    async def _process(self, client: aioredis.Redis, runner: BatchRunner, records: list[documents.StreamRecord], halt: asyncio.Event,
                       redelivered: int = 0) -> None:
        """Deliver `records` (one shard, in order) until each is done or sent to on_failure; unacked if the poller stops.

        As Lambda's bisect: splitting a failed batch does not count against maximum_retry_attempts; each half is
        processed in turn (order kept), a record that fails alone is retried up to it."""
        m = self.mapping
        stream = records[0].shard
        pending, retries = records, 0
        while pending and not halt.is_set():
            if m.maximum_record_age_s >= 0:
                now = time.time()
                old = [r for r in pending if now - r.arrived_at > m.maximum_record_age_s]
                if old:
                    await runner.send_on_failure(
                        [documents.stream_record(m, r) for r in old], RECORD_AGE_EXCEEDED, None, 0,
                        {"KinesisBatchInfo": documents.stream_failure_info(m, old)},
                    )
                    await client.xack(stream, self.group, *(r.sequence for r in old))
                    await runner.count(f"PROBLEM: {len(old)} records older than maximum_record_age_s", sent_on_failure=len(old))
                    pending = [r for r in pending if r not in old]
                    continue
            outcome = await runner.invoke([documents.stream_record(m, r) for r in pending], [r.sequence for r in pending])
            if outcome.ok:
                await client.xack(stream, self.group, *(r.sequence for r in pending))
                await runner.count("OK", records=len(pending), redelivered=redelivered)
                return
            if outcome.error is None:  # batchItemFailures: checkpoint before the first that failed, retry from it
                first = min(i for i, r in enumerate(pending) if r.sequence in outcome.failed)
                done, pending = pending[:first], pending[first:]
                if done:
                    await client.xack(stream, self.group, *(r.sequence for r in done))
                await runner.count(f"PARTIAL: {len(outcome.failed)} records failed", records=len(done), failed=len(outcome.failed), redelivered=redelivered)
            else:
                await runner.count(f"PROBLEM: {outcome.error}", failed=len(pending), redelivered=redelivered)
                if m.bisect_batch_on_function_error and len(pending) > 1:
                    half = len(pending) // 2
                    for part in (pending[:half], pending[half:]):
                        if halt.is_set():
                            return
                        await self._process(client, runner, part, halt)
                    return
            redelivered = 0
            retries += 1
            if m.maximum_retry_attempts >= 0 and retries > m.maximum_retry_attempts:
                await self._give_up(client, runner, pending, outcome, retries)
                return
            await runner.count("RETRY", retried=len(pending))
            await wait_any(halt, None, min(0.05 * 2**retries, BACKOFF_MAX_S))

    async def _give_up(self, client: aioredis.Redis, runner: BatchRunner, records: list[documents.StreamRecord], outcome: BatchOutcome, invokes: int) -> None:
        m = self.mapping
        await runner.send_on_failure(
            [documents.stream_record(m, r) for r in records], RETRIES_EXHAUSTED, outcome, invokes,
            {"KinesisBatchInfo": documents.stream_failure_info(m, records)},
        )
        await client.xack(records[0].shard, self.group, *(r.sequence for r in records))
        await runner.count(f"PROBLEM: retries exhausted for {len(records)} records", sent_on_failure=len(records))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _data(fields: dict[Any, Any]) -> bytes:
    """A record's data: its `data` field, else its fields as JSON."""
    for k, v in fields.items():
        if _text(k) == "data":
            return v if isinstance(v, bytes) else str(v).encode()
    return json.dumps({_text(k): _text(v) for k, v in fields.items()}).encode()


def _partition(fields: dict[Any, Any], stream: str) -> str:
    for k, v in fields.items():
        if _text(k) in ("partitionKey", "partition_key"):
            return _text(v)
    return stream
