"""Asynchronous invocation: the durable queue, retries, throttle backoff, event age, destinations, the DLQ, idempotency.

In-process tests drive the real AsyncInvoker over a real registry, queue and Runtime (tests/guests/c/flaky.c);
end-to-end tests run `edgefn serve` with short [queue] delays, queue events with `edgefn invoke --async`, and
read records at an HTTP receiver on 127.0.0.1 and in the dead-letter store, across a kill -9 of the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edgefn.control.async_invoke import AsyncInvoker, InvalidPayload, PayloadTooLarge
from edgefn.control.catalog import LiveCatalog
from edgefn.control.store.queue import MAX_PAYLOAD_BYTES, SqlEventQueue
from edgefn.control.store.registry import SqlRegistry
from edgefn.control.store.sqlite import SqliteDatabase
from edgefn.core.exceptions import NotFound, UnknownFunction
from edgefn.core.records import CodeAndConfig
from edgefn.manifest.schema import QueueConfig
from edgefn.runtime.invoker import Runtime
from tests.conftest import GUESTS_C, REPO, log_lines, wait_for
from tests.servers import Receiver, edge_server

FLAKY = GUESTS_C / "flaky.c"
ECHO = GUESTS_C / "echo.c"


def event(querystring: str = "") -> bytes:
    return json.dumps({"request": {"method": "GET", "uri": "/", "querystring": querystring}}).encode()


# --- in process: the real AsyncInvoker, registry, queue and Runtime ----------------------------------


class Node:
    """What an EdgeNode wires together for asynchronous invocation, without the HTTP server."""

    def __init__(self, db: Any, runtime: Runtime, wasm: bytes, functions: dict[str, dict[str, Any]], settings: QueueConfig) -> None:
        self.db = db
        self.registry = SqlRegistry(self.db)
        digest = runtime.store.add(wasm)
        for name, config in functions.items():
            self.registry.put_latest(name, CodeAndConfig(digest, {"source": "flaky.c", **config}))
        self.queue = SqlEventQueue(self.db, settings.idempotency_window_s)
        self.invoker = AsyncInvoker(self.queue, LiveCatalog(self.registry), runtime.invoker, settings)

    def deliver_all(self, max_rounds: int = 20) -> int:
        """Deliver due events until none is left (retries are due at once with retry_delays_s = [0, 0])."""

        async def run() -> int:
            delivered = 0
            for _ in range(max_rounds):
                if not await self.invoker.deliver_one():
                    break
                delivered += 1
            await self.invoker.close()
            return delivered

        return asyncio.run(run())


FAST = QueueConfig(retry_delays_s=[0.0, 0.0], throttle_backoff_min_s=0.05, throttle_backoff_max_s=0.1)


@pytest.fixture
def node(control_db: Any, runtime: Runtime, c_guest: Callable[[str], bytes]) -> Callable[..., Node]:
    """The in-process node on each engine's control database (SQLite, PostgreSQL)."""

    def make(functions: dict[str, dict[str, Any]], settings: QueueConfig = FAST) -> Node:
        return Node(control_db, runtime, c_guest("flaky"), functions, settings)

    return make


def test_submit_validates_before_anything_is_queued(node):
    n = node({"flaky": {}})

    async def submit(ref: str, payload: bytes) -> None:
        await n.invoker.submit(ref, payload)

    with pytest.raises(UnknownFunction, match="not in the registry"):
        asyncio.run(submit("nope", event()))
    with pytest.raises(UnknownFunction, match="alias"):
        asyncio.run(submit("flaky:live", event()))
    with pytest.raises(PayloadTooLarge, match="1,048,576"):
        asyncio.run(submit("flaky", b" " * (MAX_PAYLOAD_BYTES + 1)))
    with pytest.raises(InvalidPayload, match="not JSON"):
        asyncio.run(submit("flaky", b"{nope"))
    with pytest.raises(InvalidPayload, match="eventType"):
        asyncio.run(submit("flaky", json.dumps({"config": {"eventType": "nope"}, "request": {}}).encode()))
    assert n.queue.pending() == []


def test_retries_then_the_failure_record_goes_to_the_dlq(node, caplog):
    n = node({"flaky": {"async_invoke": {"max_retry_attempts": 1}}})
    request_id, duplicate = asyncio.run(n.invoker.submit("flaky", event("fail=9")))
    assert not duplicate
    with caplog.at_level(logging.INFO, logger="edgefn.function.flaky"):
        assert n.deliver_all() == 2
    assert n.queue.pending() == []
    [letter] = n.queue.dead_letters("flaky")
    assert letter.id == request_id and letter.reason == "RetriesExhausted"
    record = letter.record
    assert record["version"] == "1.0"
    assert record["requestContext"] == {"requestId": request_id, "functionArn": "edgefn:function:flaky:$LATEST",
                                        "condition": "RetriesExhausted", "approximateInvokeCount": 2}
    assert record["requestPayload"] == json.loads(event("fail=9"))
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Handled"}
    assert record["responsePayload"]["errorType"] == "FlakyError"
    # the async request id is the invocation's request id, on every attempt, and each attempt is logged
    lines = [line for _, line in log_lines(caplog)]
    assert sum(line.startswith(f"START RequestId: {request_id}") for line in lines) == 2
    assert any(f"ASYNC RequestId: {request_id} Attempt: 2" in line for line in lines)
    assert any(f"ASYNC RequestId: {request_id} RetriesExhausted: record kept in the dead-letter store" in line for line in lines)


def test_the_attempt_header_counts_from_one_and_a_retry_succeeds(node):
    n = node({"flaky": {"async_invoke": {"max_retry_attempts": 2, "on_success": "dlq"}}})
    request_id, _ = asyncio.run(n.invoker.submit("flaky", event("fail=2")))
    assert n.deliver_all() == 3
    [letter] = n.queue.dead_letters()
    assert letter.record["requestContext"]["condition"] == "Success"
    assert letter.record["requestContext"]["approximateInvokeCount"] == 3
    assert letter.record["responsePayload"]["status"] == 200
    assert letter.record["responsePayload"]["body"]["data"] == "attempt=3"


def test_an_event_older_than_max_event_age_is_not_delivered(node, caplog):
    n = node({"flaky": {"async_invoke": {"max_event_age_s": 60}}})
    # the age starts at enqueued_at (what a schedule's late tick passes): here 61 s ago
    request_id = n.queue.enqueue("flaky", event(), source="test", enqueued_at=time.time() - 61)
    fresh_id = n.queue.enqueue("flaky", event(), source="test", enqueued_at=time.time() - 50)
    with caplog.at_level(logging.INFO, logger="edgefn.function.flaky"):
        assert n.deliver_all() == 2
    [letter] = n.queue.dead_letters()
    assert letter.id == request_id
    assert letter.record["requestContext"]["condition"] == "EventAgeExceeded"
    assert letter.record["requestContext"]["approximateInvokeCount"] == 0
    assert letter.record["responseContext"]["statusCode"] == 0
    started = [line for _, line in log_lines(caplog) if line.startswith("START RequestId:")]
    assert started == [f"START RequestId: {fresh_id} Version: $LATEST"]


def test_idempotent_submission_within_the_window(node, tmp_path):
    n = node({"flaky": {}, "other": {}})
    first = asyncio.run(n.invoker.submit("flaky", event(), invocation_id="order-17"))
    again = asyncio.run(n.invoker.submit("flaky", event("changed=1"), invocation_id="order-17"))
    elsewhere = asyncio.run(n.invoker.submit("other", event(), invocation_id="order-17"))
    assert first[1] is False and again == (first[0], True)
    assert elsewhere[1] is False and elsewhere[0] != first[0]
    assert sorted(e.id for e in n.queue.pending()) == sorted([first[0], elsewhere[0]])
    short = SqlEventQueue(n.db, idempotency_window_s=0.2)
    time.sleep(0.3)
    later, duplicate = short.submit("flaky", event(), invocation_id="order-17")
    assert not duplicate and later != first[0]


def test_a_leased_event_is_not_claimed_twice_and_an_expired_lease_is_taken_over(node):
    n = node({"flaky": {}})
    request_id = n.queue.enqueue("flaky", event())
    holder = n.queue.claim(lambda e: 0.3)
    assert holder is not None and holder.id == request_id
    assert n.queue.claim(lambda e: 0.3) is None  # leased: no second worker gets the same attempt
    time.sleep(0.35)
    taker = n.queue.claim(lambda e: 30.0)  # the holder died (its lease ran out)
    assert taker is not None and taker.id == request_id and taker.lease_token != holder.lease_token
    # the first holder's late outcome changes nothing
    assert not n.queue.finish(holder) and not n.queue.renew(holder, 30.0)
    assert not n.queue.retry(holder, time.time(), attempts=1, throttles=0, last_response={})
    assert n.queue.finish(taker) and n.queue.pending() == []


def test_replay_queues_dead_letters_again_and_removes_them_in_one_transaction(node):
    n = node({"flaky": {"async_invoke": {"max_retry_attempts": 0}}, "other": {"async_invoke": {"max_retry_attempts": 0}}})
    ids = [asyncio.run(n.invoker.submit(ref, event("fail=9")))[0] for ref in ("flaky", "flaky", "other")]
    assert n.deliver_all() == 3
    assert sorted(x.id for x in n.queue.dead_letters()) == sorted(ids)
    with pytest.raises(NotFound, match="no dead letter"):
        n.queue.replay([ids[0], "missing"])
    assert len(n.queue.dead_letters()) == 3 and n.queue.pending() == []  # all or nothing
    replayed = n.queue.replay(None, "flaky")
    assert sorted(old for old, _ in replayed) == sorted(ids[:2])
    assert [x.id for x in n.queue.dead_letters()] == [ids[2]]
    assert sorted(e.id for e in n.queue.pending()) == sorted(new for _, new in replayed)
    assert all(e.source.startswith("replay:") and e.attempts == 0 for e in n.queue.pending())


# --- end to end: `edgefn serve`, `edgefn invoke --async`, an HTTP destination ------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def write_manifest(tmp: Path, receiver: Receiver) -> Path:
    manifest = tmp / "edgefn.toml"
    manifest.write_text(f"""
[admin]
port = 0

[queue]
workers = 2
retry_delays_s = [0.2, 0.2]
throttle_backoff_min_s = 0.2
throttle_backoff_max_s = 0.5
poll_interval_ms = 50

[functions.flaky]
source = "{FLAKY}"
async_invoke = {{ max_retry_attempts = 2, on_success = "{receiver.url}/success" }}

[functions.chain]
source = "{FLAKY}"
async_invoke = {{ max_retry_attempts = 0, on_failure = "function:sink" }}

[functions.sink]
source = "{ECHO}"
async_invoke = {{ on_success = "{receiver.url}/flaky-endpoint" }}

[functions.throttled]
source = "{FLAKY}"
reserved_concurrency = 0
async_invoke = {{ max_event_age_s = 60 }}

[functions.slow]
source = "{FLAKY}"
timeout_ms = 4000
fuel = 20_000_000_000
async_invoke = {{ max_retry_attempts = 0, on_success = "{receiver.url}/slow" }}

[default_behavior]
function = "flaky"
""")
    return manifest


def edgefn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def invoke_async(manifest: Path, ref: str, payload: bytes, *extra: str) -> str:
    path = manifest.parent / f"event-{time.monotonic_ns()}.json"
    path.write_bytes(payload)
    proc = edgefn("invoke", "--async", ref, "-e", str(path), "--config", str(manifest), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def queue_of(manifest: Path) -> SqlEventQueue:
    """The server's queue, opened as the CLI opens it (for queuing and checking without a subprocess each time)."""
    return SqlEventQueue(SqliteDatabase(manifest.parent / ".edgefn" / "control.db"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Path]:
    manifest = write_manifest(tmp_path_factory.mktemp("async-app"), receiver)
    with edge_server(manifest, tls=False):
        yield manifest


def test_e2e_retried_until_success_and_retries_exhausted_to_the_dlq(served, receiver):
    queue = queue_of(served)
    ok_id = invoke_async(served, "flaky", event("fail=2"))
    bad_id = queue.enqueue("flaky", event("fail=9"), source="test")  # what the CLI does, without another subprocess
    [record] = wait_for(lambda: [r for r in receiver.at("/success") if r["requestContext"]["requestId"] == ok_id], 20, "the Success record")
    assert record["requestContext"]["condition"] == "Success" and record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"]["body"]["data"] == "attempt=3"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    wait_for(lambda: [x for x in queue.dead_letters("flaky") if x.id == bad_id], 20, "the dead letter")
    listed = edgefn("dlq", "list", "flaky", "--json", "--config", str(served))
    assert listed.returncode == 0, listed.stderr
    [letter] = [x for x in json.loads(listed.stdout) if x["id"] == bad_id]
    assert letter["record"]["requestContext"]["condition"] == "RetriesExhausted"
    assert letter["record"]["requestContext"]["approximateInvokeCount"] == 3  # max_retry_attempts + 1
    # replay: the dead letter is queued again under a new request id (and, failing again, comes back)
    proc = edgefn("dlq", "replay", bad_id, "flaky", "--config", str(served))
    assert proc.returncode == 0, proc.stderr
    new_id = proc.stdout.split("as request ")[1].split()[0]
    assert bad_id not in [x.id for x in queue.dead_letters()]
    wait_for(lambda: [x for x in queue.dead_letters("flaky") if x.id == new_id], 20, "the replayed event's dead letter")
    assert not [r for r in receiver.at("/success") if r["requestContext"]["requestId"] in (bad_id, new_id)]


def test_e2e_function_destination_and_http_destination_retries(served, receiver):
    queue = queue_of(served)
    chain_id = queue.enqueue("chain", event("fail=9"), source="test")
    # chain fails -> its record is the body of an event for `sink` (echo) -> sink's Success record is POSTed,
    # refused once with 503 by the receiver and delivered on the retry
    [record] = wait_for(lambda: receiver.at("/flaky-endpoint"), 20, "sink's Success record")
    assert receiver.refused == 1
    assert record["requestContext"]["functionArn"] == "edgefn:function:sink:$LATEST"
    assert record["requestContext"]["condition"] == "Success"
    inner = json.loads(record["responsePayload"]["body"]["data"])
    assert inner["requestContext"]["requestId"] == chain_id
    assert inner["requestContext"]["condition"] == "RetriesExhausted"
    assert inner["requestPayload"] == json.loads(event("fail=9"))
    assert not queue.dead_letters("chain") and not queue.dead_letters("sink")


def test_e2e_idempotent_cli_submission(served, receiver):
    first = invoke_async(served, "flaky", event(), "--invocation-id", "pay-42")
    assert invoke_async(served, "flaky", event(), "--invocation-id", "pay-42") == first
    wait_for(lambda: [r for r in receiver.at("/success") if r["requestContext"]["requestId"] == first], 20, "the record")
    time.sleep(0.3)
    assert len([r for r in receiver.at("/success") if r["requestContext"]["requestId"] == first]) == 1


def test_e2e_throttled_events_back_off_until_their_age_runs_out(served):
    queue = queue_of(served)
    # reserved_concurrency = 0 throttles every attempt; the event was queued 58 s ago, so it expires in ~2 s
    request_id = queue.enqueue("throttled", event(), source="test", enqueued_at=time.time() - 58)
    seen = wait_for(lambda: [e for e in queue.pending("throttled") if e.throttles >= 2], 10, "throttled retries")
    assert seen[0].attempts == 0 and seen[0].last_response["responseContext"]["statusCode"] == 429
    [letter] = wait_for(lambda: [x for x in queue.dead_letters("throttled") if x.id == request_id], 10, "expiry")
    assert letter.record["requestContext"]["condition"] == "EventAgeExceeded"
    assert letter.record["requestContext"]["approximateInvokeCount"] == 0
    assert letter.record["responseContext"]["statusCode"] == 429
    assert letter.record["responsePayload"]["errorType"] == "TooManyRequestsException"


def test_e2e_kill_9_with_events_queued_and_in_flight_loses_none(tmp_path, receiver):
    manifest = write_manifest(tmp_path, receiver)
    with edge_server(manifest, tls=False) as server:
        queue = queue_of(manifest)
        ids = [queue.enqueue(ref, event(qs), source="test") for ref, qs in [("slow", "spin=100")] * 4 + [("flaky", "fail=9")] * 2]
        wait_for(lambda: server.log.read_text().count("ASYNC RequestId:") >= 2, 20, "deliveries to start")
        server.proc.kill()  # SIGKILL: no shutdown, leases held
        server.proc.wait()
    left = queue.pending()
    assert [e for e in left if e.lease_token], "no event was in flight at the kill: make the guest slower"
    assert [e for e in left if not e.lease_token], "no event was still queued at the kill"
    with edge_server(manifest, tls=False):

        def accounted() -> set[str]:
            delivered = {r["requestContext"]["requestId"] for r in receiver.at("/slow")}
            dead = {x.id for x in queue.dead_letters()}
            return (delivered | dead) & set(ids) if not queue.pending() else set()

        assert wait_for(lambda: accounted() == set(ids), 30, "every event delivered or dead-lettered")
    assert {x.id for x in queue.dead_letters()} == set(ids[4:])
