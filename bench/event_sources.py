"""Polling event sources against a raw consumer of the same broker, in one run (`python bench/event_sources.py`;
docs/event-sources.md).

For each source (a RabbitMQ queue through aio-pika, a Redis stream through redis-py):

1. Throughput: N records published at once; delivered records/s from the first publish to the last record
   reported, and the node's CPU per record. The baseline, measured in the same run against the same broker, is a
   raw consumer in Python with the same batch size (aio-pika with prefetch and acks; XREADGROUP + XACK) that does
   nothing with a batch: the ceiling the broker and its client set.
2. End-to-end lag: one record every 20 ms for 100 records, from its publish to the function's report (or the raw
   consumer's receipt): p50 and p99.

The function is tests/guests/js/batch.js, which POSTs each batch to a receiver in this process (the clock both
ends read). Writes bench/results/event_sources.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import aio_pika
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' receiver, wait and brokers

from common import PYTHON, RESULTS, log, machine, write_json  # noqa: E402
from servers import Server, free_port  # noqa: E402

from tests.conftest import wait_for  # noqa: E402
from tests.servers import Receiver, batch_consumer_manifest  # noqa: E402
from tests.services import rabbitmq_url, redis_url  # noqa: E402

BATCH = 10
POLL_S = 0.005


def _manifest(directory: Path, receiver: Receiver, source: str) -> Path:
    path = directory / "edgefn.toml"
    path.write_text(batch_consumer_manifest(receiver, f"event-sources-bench-{uuid.uuid4().hex[:6]}", f"""
[[event_sources]]
function = "consumer"
batch_size = {BATCH}
maximum_concurrency = 2
starting_position = "TRIM_HORIZON"
{source}
"""))
    return path


def _arrivals(receiver: Receiver, prefix: str) -> dict[str, float]:
    """record text -> when it was first reported."""
    seen: dict[str, float] = {}
    for t, batch in receiver.arrivals("/got"):
        for r in batch["records"]:
            if r["text"].startswith(prefix):
                seen.setdefault(r["text"], t)
    return seen


def _measure(publish: Callable[[list[str]], None], arrivals: Callable[[str], dict[str, float]], n: int, trickle: int) -> dict[str, Any]:
    """Throughput of `n` records published at once, then the lag of `trickle` records one every 20 ms."""
    tag = uuid.uuid4().hex[:6]
    texts = [f"{tag}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    publish(texts)
    wait_for(lambda: len(arrivals(f"{tag}-")) >= n, 600, f"{n} records", POLL_S * 10)
    last = max(arrivals(f"{tag}-").values())
    lag_tag = uuid.uuid4().hex[:6]
    sent: dict[str, float] = {}
    for i in range(trickle):
        text = f"{lag_tag}-{i}"
        sent[text] = time.perf_counter()
        publish([text])
        time.sleep(0.02)  # the arrival rate under test, not a wait for a condition
    wait_for(lambda: len(arrivals(f"{lag_tag}-")) >= trickle, 120, f"{trickle} trickled records", POLL_S)
    got = arrivals(f"{lag_tag}-")
    lags = sorted((got[t] - sent[t]) * 1000 for t in sent)
    return {"records": n, "seconds": last - t0, "records_per_s": n / (last - t0), "lag_p50_ms": statistics.median(lags),
            "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))]}


# --- the brokers ----------------------------------------------------------------------------------------------


def _amqp_publisher(url: str, queue: str) -> Callable[[list[str]], None]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    state: dict[str, Any] = {}

    async def setup() -> None:
        state["conn"] = await aio_pika.connect(url)
        state["ch"] = await state["conn"].channel()
        await state["ch"].declare_queue(queue, durable=True)

    asyncio.run_coroutine_threadsafe(setup(), loop).result(30)

    def publish(texts: list[str]) -> None:
        async def go() -> None:
            for t in texts:
                await state["ch"].default_exchange.publish(aio_pika.Message(t.encode()), routing_key=queue)

        asyncio.run_coroutine_threadsafe(go(), loop).result(120)

    return publish


def _stream_publisher(client: redis.Redis, stream: str) -> Callable[[list[str]], None]:
    def publish(texts: list[str]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for t in texts:
                pipe.xadd(stream, {"data": t})
            pipe.execute()

    return publish


class _RawQueueConsumer:
    """The baseline: aio-pika with prefetch = BATCH, each batch acked and noted, nothing else."""

    def __init__(self, url: str, queue: str) -> None:
        self.seen: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(url, queue), self.loop).result(30)

    async def _start(self, url: str, queue: str) -> None:
        self.conn = await aio_pika.connect(url)
        ch = await self.conn.channel()
        await ch.set_qos(prefetch_count=BATCH)
        q = await ch.declare_queue(queue, durable=True)

        async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.seen.setdefault(message.body.decode(), time.perf_counter())
            await message.ack()

        await q.consume(on)

    def arrivals(self, prefix: str) -> dict[str, float]:
        return {k: v for k, v in list(self.seen.items()) if k.startswith(prefix)}

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.conn.close(), self.loop).result(30)


class _RawStreamConsumer:
    """The baseline: XREADGROUP COUNT BATCH, XACK, noted, in a thread."""

    def __init__(self, url: str, stream: str) -> None:
        self.seen: dict[str, float] = {}
        self.client = redis.Redis.from_url(url)
        self.client.xgroup_create(stream, "raw", id="0", mkstream=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: str) -> None:
        while not self.stop.is_set():
            answer: Any = self.client.xreadgroup("raw", "raw", {stream: ">"}, count=BATCH, block=200)
            for entry_id, fields in (answer[0][1] if answer else []):
                self.seen.setdefault(fields[b"data"].decode(), time.perf_counter())
                self.client.xack(stream, "raw", entry_id)

    def arrivals(self, prefix: str) -> dict[str, float]:
        return {k: v for k, v in list(self.seen.items()) if k.startswith(prefix)}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


def run(quick: bool = False) -> dict[str, Any]:
    n, trickle = (200, 30) if quick else (2000, 100)
    out: dict[str, Any] = {"machine": machine()}
    receiver = Receiver()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgefn-esm-bench-") as tmp_dir, rabbitmq_url() as amqp, redis_url() as redis_url_:
        tmp = Path(tmp_dir)
        r = redis.Redis.from_url(redis_url_)
        for kind in ("queue", "stream"):
            sfx = uuid.uuid4().hex[:8]
            raw_name, name = f"bench-raw-{sfx}", f"bench-{sfx}"
            if kind == "queue":
                raw = _RawQueueConsumer(amqp, raw_name)
                base = _measure(_amqp_publisher(amqp, raw_name), raw.arrivals, n, trickle)
                source = f'source = "{amqp}"\nqueue = "{name}"'
                publish = _amqp_publisher(amqp, name)
            else:
                raw = _RawStreamConsumer(redis_url_, raw_name)
                base = _measure(_stream_publisher(r, raw_name), raw.arrivals, n, trickle)
                source = f'source = "{redis_url_}"\nstreams = ["{name}"]'
                publish = _stream_publisher(r, name)
            raw.close()
            port = free_port()
            (tmp / kind).mkdir()
            manifest = _manifest(tmp / kind, receiver, source)
            server = Server(f"esm-{kind}", [PYTHON, "-m", "edgefn.cli", "serve", "--config", str(manifest), "--port", str(port), "--tls-port", "0",
                                            "--admin-port", "0"], port, None)
            server.start()
            try:
                cpu0 = server.cpu_seconds()
                edge = _measure(publish, lambda p: _arrivals(receiver, p), n, trickle)
                edge["node_cpu_ms_per_record"] = (server.cpu_seconds() - cpu0) / (n + trickle) * 1000
            finally:
                server.stop()
            out[kind] = {"edgefn": edge, "raw_consumer": base, "throughput_over_raw": edge["records_per_s"] / base["records_per_s"],
                         "lag_p50_over_raw": edge["lag_p50_ms"] / base["lag_p50_ms"]}
            log(f"{kind}: edgefn {edge['records_per_s']:.0f} records/s (raw {base['records_per_s']:.0f}), lag p50 {edge['lag_p50_ms']:.1f} ms "
                f"(raw {base['lag_p50_ms']:.1f}), p99 {edge['lag_p99_ms']:.1f} ms")
            if kind == "stream":
                r.delete(raw_name, name)
        r.close()
    receiver.close()
    out["seconds"] = time.time() - started
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| source | edgefn records/s | raw consumer records/s | edgefn / raw | lag p50 ms (raw) | lag p99 ms (raw) | node CPU ms / record |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in ("queue", "stream"):
        v = result[kind]
        e, b = v["edgefn"], v["raw_consumer"]
        lines.append(f"| {'RabbitMQ queue' if kind == 'queue' else 'Redis stream'} | {e['records_per_s']:,.0f} | {b['records_per_s']:,.0f} | "
                     f"{v['throughput_over_raw']:.3f}x | {e['lag_p50_ms']:.1f} ({b['lag_p50_ms']:.1f}) | {e['lag_p99_ms']:.1f} ({b['lag_p99_ms']:.1f}) | "
                     f"{e['node_cpu_ms_per_record']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, to check the harness")
    args = parser.parse_args()
    result = run(args.quick)
    path = (RESULTS / "tmp" / "results" if args.quick else RESULTS) / "event_sources.json"
    write_json(path, result)
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
