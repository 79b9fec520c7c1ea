"""Polling event sources against the real brokers on loopback: a RabbitMQ queue (aio-pika) and Redis Streams.

A real `edgefn serve` reads them and runs tests/guests/js/batch.js, which POSTs every batch it gets to a Receiver
and fails the records the test marks ("fail..." by batchItemFailures, "crash..." the whole batch)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any, Iterator

import aio_pika
import httpx
import pytest
import redis

from edgefn.control.store import open_control_store
from tests.conftest import run_edgefn, wait_for
from tests.servers import OtlpReceiver, Receiver, batch_consumer_manifest, edge_server, kill_group
from tests.services import rabbitmq_url, redis_url

TOKEN = "event-sources-token"
ESM = "/2015-03-31/event-source-mappings"


@pytest.fixture(scope="module")
def amqp() -> Iterator[str]:
    with rabbitmq_url() as url:
        yield url


@pytest.fixture(scope="module")
def redis_broker() -> Iterator[str]:
    with redis_url() as url:
        yield url


def _publish(url: str, queue: str, bodies: list[str]) -> None:
    async def go() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)

    asyncio.run(go())


def _queue_counts(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of `queue`."""
    async def go() -> tuple[int, int]:
        connection = await aio_pika.connect(url)
        async with connection:
            q = await (await connection.channel()).declare_queue(queue, durable=True)
            return q.declaration_result.message_count or 0, q.declaration_result.consumer_count or 0

    return asyncio.run(go())


def _delete_queues(url: str, *queues: str) -> None:
    async def go() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for q in queues:
                await channel.queue_delete(q)

    asyncio.run(go())


def _got(receiver: Receiver) -> list[dict[str, Any]]:
    """Every batch the function reported, in arrival order (each: {"records": [{id, text, ...}]})."""
    return receiver.at("/got")


def _texts(receiver: Receiver, prefix: str) -> list[str]:
    """The text of every record delivered that starts with `prefix` (or is marked fail-/crash- before it), in delivery order."""
    return [r["text"] for batch in _got(receiver) for r in batch["records"] if r["text"].removeprefix("fail-").removeprefix("crash-").startswith(prefix)]


def _story(world: dict[str, Any], prefix: str) -> str:
    """What a failed ordering assertion needs: each batch the function reported, and the server's poller lines."""
    batches = [[r["text"] for r in b["records"]] for b in _got(world["receiver"]) if any(prefix in r["text"] for r in b["records"])]
    lines = [ln for ln in world["server"].log.read_text(errors="replace").splitlines() if any(k in ln for k in ("POLL", "event source", "fetch", "Task timed out", "ERROR"))]
    return "batches reported: " + json.dumps(batches) + "\nserver log (poller, fetch, errors):\n" + "\n".join(lines[-200:])


def _mappings(config: Path) -> dict[str, dict[str, Any]]:
    """The app's mappings by their source's queue or streams (`edgefn event-sources list --json`)."""
    done = run_edgefn("event-sources", "list", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return {doc["Target"]: doc for doc in json.loads(done.stdout)}


def _dead_letters(config: Path, uuid_: str) -> list[dict[str, Any]]:
    store = open_control_store(config.parent / ".edgefn" / "control.db")
    try:
        return [d.record for d in store.queue.dead_letters() if _source_of(d) == uuid_]
    finally:
        store.close()


def _source_of(dead: Any) -> str:
    payload = json.loads(dead.payload)
    return str(payload["request"]["uri"]).rsplit("/", 1)[-1]


def _batch_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    body = record["requestPayload"]["request"]["body"]
    data = body["data"] if body.get("encoding") != "base64" else base64.b64decode(body["data"]).decode()
    return list(json.loads(data)["Records"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, amqp: str, redis_broker: str) -> Iterator[dict[str, Any]]:
    """One server reading four sources: queue A (partial failures, hidden 1 s, two receives, up to 3 consumers), queue B
    (the switch), streams C0/C1 (in order, bisected, two retries) and stream D (records older than a minute go on failure)."""
    sfx = uuid.uuid4().hex[:8]
    names = {"A": f"qa-{sfx}", "B": f"qb-{sfx}", "C0": f"sc0-{sfx}", "C1": f"sc1-{sfx}", "D": f"sd-{sfx}"}
    receiver, spans = Receiver(), OtlpReceiver()
    sources = f"""
[tracing]
otlp_endpoint = "{spans.url}"

[[event_sources]]
function = "consumer"
source = "{amqp}"
queue = "{names['A']}"
batch_size = 5
report_batch_item_failures = true
visibility_timeout_s = 1
max_receive_count = 2
maximum_concurrency = 3

[[event_sources]]
function = "consumer"
source = "{amqp}"
queue = "{names['B']}"

[[event_sources]]
function = "consumer"
source = "{redis_broker}"
streams = ["{names['C0']}", "{names['C1']}"]
batch_size = 10
starting_position = "TRIM_HORIZON"
bisect_batch_on_function_error = true
maximum_retry_attempts = 2
report_batch_item_failures = true

[[event_sources]]
function = "consumer"
source = "{redis_broker}"
streams = ["{names['D']}"]
starting_position = "TRIM_HORIZON"
maximum_record_age_s = 60
"""
    root = tmp_path_factory.mktemp("event-sources")
    config = root / "edgefn.toml"
    config.write_text(batch_consumer_manifest(receiver, f"events-{sfx}", sources))
    r = redis.Redis.from_url(redis_broker)
    try:
        with edge_server(config, tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
            yield {"server": server, "config": config, "receiver": receiver, "names": names, "amqp": amqp, "redis": r, "spans": spans}
    finally:
        receiver.close()
        spans.close()
        r.delete(names["C0"], names["C1"], names["D"])
        r.close()
        _delete_queues(amqp, names["A"], f"{names['A']}.edgefn-retry", names["B"], f"{names['B']}.edgefn-retry")


def _uuid(world: dict[str, Any], key: str) -> str:
    target = world["names"][key] if key in ("A", "B", "D") else f"{world['names']['C0']},{world['names']['C1']}"
    return str(wait_for(lambda: _mappings(world["config"]).get(target, {}).get("UUID"), 30, f"mapping {key} in the list"))


def test_a_queue_is_delivered_in_batches_and_acked(world):
    name = world["names"]["A"]
    _publish(world["amqp"], name, [f"A-ok-{i}" for i in range(40)])
    wait_for(lambda: len(set(_texts(world["receiver"], "A-ok-"))) == 40, 120, "all 40 messages delivered")
    assert all(len(b["records"]) <= 5 for b in _got(world["receiver"]))
    assert all(r["receives"] == 1 for b in _got(world["receiver"]) for r in b["records"] if r["text"].startswith("A-ok-"))
    wait_for(lambda: _queue_counts(world["amqp"], name)[0] == 0, 60, "the queue to be empty")
    doc = wait_for(lambda: (d := _mappings(world["config"])[name])["Counters"]["Records"] >= 40 and d, 30, "the counters")
    assert doc["State"] == "Enabled" and doc["Kind"] == "queue" and "guest:***@" in doc["Source"] and doc["BatchSize"] == 5


def test_each_batch_is_a_consumer_span_with_its_invocation_and_fetch_under_it(world):
    name = world["names"]["A"]
    _publish(world["amqp"], name, ["A-traced-1"])
    wait_for(lambda: "A-traced-1" in _texts(world["receiver"], "A-traced-"), 60, "the traced message")
    mapping = _uuid(world, "A")

    def batch_span() -> dict[str, Any] | None:
        return next((s for s in list(world["spans"].spans) if s["name"] == f"event-source queue {mapping[:8]}"
                     and s["attributes"]["messaging.destination.name"] == name), None)

    batch = wait_for(batch_span, 60, "the batch's span")
    assert batch["kind"] == 5 and batch["parent_id"] == "" and batch["attributes"]["edgefn.event_source"] == mapping  # a consumer span, a root
    under = wait_for(lambda: (got := {s["name"]: s for s in world["spans"].of_trace(batch["trace_id"])}) and {"viewer-request consumer", "fetch POST"} <= set(got)
                     and got, 60, "the invocation and its fetch in the batch's trace")
    assert under["viewer-request consumer"]["parent_id"] == batch["span_id"]
    assert under["fetch POST"]["parent_id"] == under["viewer-request consumer"]["span_id"]


def test_a_queue_retries_only_the_failed_item_after_the_visibility_timeout_then_sends_it_on_failure(world):
    name, receiver = world["names"]["A"], world["receiver"]
    _publish(world["amqp"], name, ["A-part-1", "fail-A-part-2", "A-part-3"])
    mapping = _uuid(world, "A")
    dead = wait_for(lambda: _dead_letters(world["config"], mapping), 120, "the failed message in the dead-letter store")
    (record,) = dead
    assert record["requestContext"]["condition"] == "MaxReceiveCountExceeded"
    assert [r["body"] for r in _batch_records(record)] == ["fail-A-part-2"]
    receives = [(t, r["receives"]) for t, b in receiver.arrivals("/got") for r in b["records"] if r["text"] == "fail-A-part-2"]
    assert [n for _, n in receives] == [1, 2]  # received twice (max_receive_count), with its count
    assert receives[1][0] - receives[0][0] >= 0.9  # hidden for the visibility timeout in between
    assert _texts(receiver, "A-part-").count("A-part-1") == 1 and _texts(receiver, "A-part-").count("A-part-3") == 1  # the others: once


def test_queue_consumers_scale_with_the_backlog_up_to_the_cap(world):
    name = world["names"]["A"]
    _publish(world["amqp"], name, [f"slow-A-bulk-{i}" for i in range(600)])  # 30 ms a batch: 3.6 s of work for one consumer
    most = wait_for(lambda: (c := _queue_counts(world["amqp"], name)[1]) > 1 and c, 120, "a second consumer while the backlog lasts")
    assert most <= 3
    wait_for(lambda: len(set(_texts(world["receiver"], "slow-A-bulk-"))) == 600, 300, "all 600 delivered")
    assert _queue_counts(world["amqp"], name)[1] <= 3


def test_disabling_a_mapping_stops_its_polling_and_enabling_resumes_it(world):
    name, config = world["names"]["B"], world["config"]
    mapping = _uuid(world, "B")
    wait_for(lambda: _queue_counts(world["amqp"], name)[1] >= 1, 60, "the poller to consume the queue")
    off = run_edgefn("event-sources", "disable", mapping[:8], "--config", str(config))
    assert off.returncode == 0 and "disabled" in off.stdout, off.stderr
    wait_for(lambda: _queue_counts(world["amqp"], name)[1] == 0, 60, "the consumer to leave")
    _publish(world["amqp"], name, ["B-while-off"])
    assert _queue_counts(world["amqp"], name) == (1, 0)  # it waits in the broker
    assert _mappings(config)[name]["State"] == "Disabled"
    admin = world["server"].admin
    on = httpx.put(f"{admin}{ESM}/{mapping}", json={"Enabled": True}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert on.status_code == 202 and on.json()["State"] == "Enabled"
    wait_for(lambda: "B-while-off" in _texts(world["receiver"], "B-"), 60, "the message after enabling")
    listed = httpx.get(f"{admin}{ESM}", params={"FunctionName": "consumer"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    assert mapping in {m["UUID"] for m in listed["EventSourceMappings"]}
    bad = run_edgefn("event-sources", "disable", "no-such-mapping", "--config", str(config))
    assert bad.returncode != 0 and "no event source mapping" in bad.stderr and "Traceback" not in bad.stderr


def test_a_stream_is_read_in_order_per_shard_and_checkpointed(world):
    r, names = world["redis"], world["names"]
    for i in range(30):
        r.xadd(names["C0"], {"data": f"C-0-{i}"})
        r.xadd(names["C1"], {"data": f"C-1-{i}", "partitionKey": "p1"})
    wait_for(lambda: len(set(_texts(world["receiver"], "C-"))) >= 60, 120, "all 60 records delivered")
    for shard in ("0", "1"):
        firsts: list[int] = []
        for text in _texts(world["receiver"], f"C-{shard}-"):
            n = int(text.rsplit("-", 1)[1])
            if n not in firsts:
                firsts.append(n)
        assert firsts == list(range(30))  # in order
    mapping = _uuid(world, "C")
    for key in (names["C0"], names["C1"]):
        wait_for(lambda key=key: r.xpending(key, f"edgefn-{mapping}")["pending"] == 0, 60, f"{key} checkpointed")


def test_a_stream_bisects_a_failing_batch_and_sends_the_poison_record_on_failure_alone(world):
    r, names, receiver = world["redis"], world["names"], world["receiver"]
    texts = [f"C-b-{i}" if i != 3 else "crash-C-b-3" for i in range(8)]
    with r.pipeline(transaction=True) as pipe:  # one batch: all eight land at once
        for t in texts:
            pipe.xadd(names["C0"], {"data": t})
        pipe.execute()
    mapping = _uuid(world, "C")
    dead = wait_for(lambda: [d for d in _dead_letters(world["config"], mapping) if d["requestContext"]["condition"] == "RetryAttemptsExhausted"],
                    120, "the poison record on failure")
    (record,) = dead
    assert record["KinesisBatchInfo"]["batchSize"] == 1 and record["KinesisBatchInfo"]["shardId"] == names["C0"]
    (poison,) = _batch_records(record)
    assert base64.b64decode(poison["kinesis"]["data"]).decode() == "crash-C-b-3"

    def last_deliveries() -> dict[str, int]:
        """Each record's last delivery (the one that succeeded, or gave up), by its place in delivery order."""
        return {t: i for i, t in enumerate(_texts(receiver, "C-b-"))}

    def second_half_after_poison() -> bool:
        last = last_deliveries()
        return all(last.get(f"C-b-{i}", -1) > last["crash-C-b-3"] for i in range(4, 8))

    # the batch's second half was delivered once already, in the failing whole batch: it counts once it comes
    # again after the poison record (on-failure is written before the poller moves on, so it may come later)
    wait_for(second_half_after_poison, 60, "the batch's second half, after the poison record")
    alone = [b for b in _got(receiver) if [x["text"] for x in b["records"]] == ["crash-C-b-3"]]
    assert len(alone) == 3  # bisected down to itself, then tried once and retried twice (maximum_retry_attempts)
    last = last_deliveries()
    assert {f"C-b-{i}" for i in range(3)} <= set(last)
    assert last["C-b-2"] < last["crash-C-b-3"] < last["C-b-4"], _story(world, "C-b-")  # the shard's order kept through the bisection


def test_stream_records_older_than_the_maximum_age_go_on_failure_unprocessed(world):
    r, names = world["redis"], world["names"]
    with r.pipeline(transaction=True) as pipe:  # one batch
        pipe.xadd(names["D"], {"data": "D-ancient-1"}, id="1000-1")  # a stream id is its time: 1970
        pipe.xadd(names["D"], {"data": "D-ancient-2"}, id="1000-2")
        pipe.xadd(names["D"], {"data": "D-fresh"})
        pipe.execute()
    mapping = _uuid(world, "D")
    wait_for(lambda: "D-fresh" in _texts(world["receiver"], "D-"), 120, "the fresh record")
    dead = wait_for(lambda: _dead_letters(world["config"], mapping), 60, "the old records on failure")
    (record,) = dead
    assert record["requestContext"]["condition"] == "RecordAgeExceeded" and record["KinesisBatchInfo"]["batchSize"] == 2
    assert not [t for t in _texts(world["receiver"], "D-ancient")]  # never handed to the function


def test_pollers_resume_from_their_checkpoint_after_kill_9_without_losing_a_record(tmp_path, amqp, redis_broker):
    sfx = uuid.uuid4().hex[:8]
    queue, stream = f"qk-{sfx}", f"sk-{sfx}"
    receiver = Receiver()
    config = tmp_path / "edgefn.toml"
    config.write_text(batch_consumer_manifest(receiver, f"kill-{sfx}", f"""
[[event_sources]]
function = "consumer"
source = "{amqp}"
queue = "{queue}"
batch_size = 5

[[event_sources]]
function = "consumer"
source = "{redis_broker}"
streams = ["{stream}"]
batch_size = 5
starting_position = "TRIM_HORIZON"
"""))
    r = redis.Redis.from_url(redis_broker)
    try:
        with edge_server(config, tls=False) as first:
            _publish(amqp, queue, [f"K-q-{i}" for i in range(200)])
            for i in range(200):
                r.xadd(stream, {"data": f"K-s-{i}"})
            wait_for(lambda: len(_texts(receiver, "K-q-")) >= 20 and len(_texts(receiver, "K-s-")) >= 20, 120, "some of each delivered")
            kill_group(first)
        with edge_server(config, tls=False):
            wait_for(lambda: set(_texts(receiver, "K-q-")) == {f"K-q-{i}" for i in range(200)}, 240, "every queue message after the restart")
            wait_for(lambda: set(_texts(receiver, "K-s-")) == {f"K-s-{i}" for i in range(200)}, 240, "every stream record after the restart")
            firsts: list[int] = []
            for text in _texts(receiver, "K-s-"):
                if (n := int(text.rsplit("-", 1)[1])) not in firsts:
                    firsts.append(n)
            assert firsts == list(range(200))  # the stream's order held across the kill
            duplicates = len(_texts(receiver, "K-")) - 400
            assert duplicates >= 0
            counters = wait_for(lambda: all(m["Counters"]["Records"] for m in _mappings(config).values()) and _mappings(config), 30, "counters")
            redelivered = sum(m["Counters"]["Redelivered"] for m in counters.values())
            assert redelivered >= 0 and duplicates <= redelivered + 10  # what came twice was redelivered (a batch in flight per source)
    finally:
        receiver.close()
        r.delete(stream)
        r.close()
        _delete_queues(amqp, queue, f"{queue}.edgefn-retry")


def test_an_unreachable_broker_is_retried_with_backoff_while_the_node_serves(tmp_path):
    from tests.servers import free_port

    receiver = Receiver()
    config = tmp_path / "edgefn.toml"
    config.write_text(batch_consumer_manifest(receiver, f"down-{uuid.uuid4().hex[:6]}", f"""
[[event_sources]]
function = "consumer"
source = "redis://127.0.0.1:{free_port()}/0"
streams = ["nowhere"]
"""))
    try:
        with edge_server(config, tls=False) as server:
            failures = lambda: [line for line in server.log.read_text().splitlines() if "its poller stopped" in line]  # noqa: E731
            wait_for(lambda: len(failures()) >= 2, 60, "the poller's second failure", poll_s=0.2)
            first, second = failures()[:2]
            assert "starting it again in 1 s" in first and "starting it again in 2 s" in second and "redis://127.0.0.1:" in first
            assert httpx.get(f"{server.base}/_edgefn/health", timeout=30).status_code == 200  # the node serves on
    finally:
        receiver.close()
