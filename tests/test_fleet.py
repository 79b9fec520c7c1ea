"""A fleet: several `edgefn serve` nodes on one real PostgreSQL control plane (docs/fleet.md).

Each node has its own directory (module store, locked app, snapshot), as separate machines would; they share
only the database. Deploys, new routes and alias flips reach every node without a restart; a node killed with
leases held loses no event; a schedule fires once per tick across nodes and restarts; with the database
stopped, edge traffic goes on and async submissions get 503 until it returns.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from edgefn.control.store import open_control_store
from tests.conftest import GUESTS_C, REPO, run_edgefn, wait_for
from tests.servers import EdgeServer, Receiver, edge_server, kill_group
from tests.services import ThrowawayPostgres, own_schema

HELLO = REPO / "examples" / "hello" / "src" / "hello.c"
FLAKY = GUESTS_C / "flaky.c"


def write_node(directory: Path, receiver: Receiver, suffix: str = " from edgefn!", extra: str = "") -> Path:
    """One node's copy of the app: hello (its body ends with `suffix`), a slow async function, `extra` tables."""
    (directory / "src").mkdir(parents=True, exist_ok=True)
    (directory / "src" / "hello.c").write_text(HELLO.read_text().replace('" from edgefn!"', json.dumps(suffix)))
    shutil.copy(FLAKY, directory / "src" / "flaky.c")
    manifest = directory / "edgefn.toml"
    manifest.write_text(f"""
[app]
name = "fleet"

[queue]
workers = 2
poll_interval_ms = 100
retry_delays_s = [0.2, 0.2]

[functions.hello]
source = "src/hello.c"
env = {{ GREETING = "Hello" }}

[functions.slow]
source = "src/flaky.c"
timeout_ms = 4000
fuel = 20_000_000_000
async_invoke = {{ max_retry_attempts = 0, on_success = "{receiver.url}/slow" }}
{extra}
[default_behavior]
function = "hello"
""")
    return manifest


def edgefn(manifest: Path, control: str, *args: str) -> str:
    done = run_edgefn(*args, "--config", str(manifest), "--control", control, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def published(out: str) -> int:
    """The version `edgefn publish` says it made ("published hello:3 (code …)")."""
    return int(out.split(":", 1)[1].split()[0])


def body(server: EdgeServer, path: str = "/") -> str:
    return httpx.get(server.base + path, timeout=10).text


def event(querystring: str) -> bytes:
    return json.dumps({"request": {"method": "GET", "uri": "/", "querystring": querystring}}).encode()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def serve_nodes(manifests: list[Path], control: str, stack: list[Any]) -> list[EdgeServer]:
    servers = []
    for manifest in manifests:
        cm = edge_server(manifest, "--control", control, tls=False)
        servers.append(cm.__enter__())
        stack.append(cm)
    return servers


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Context managers a test entered, exited in reverse order however it ends."""
    stack: list[Any] = []
    yield stack
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def test_three_nodes_follow_deploys_new_routes_and_alias_flips(tmp_path, postgres_schema, receiver, closing):
    control = postgres_schema
    manifests = [write_node(tmp_path / f"node{i}", receiver) for i in range(3)]
    nodes = serve_nodes(manifests, control, closing)
    assert [body(n) for n in nodes] == ["Hello from edgefn!"] * 3

    # new code, deployed through node 0: the others fetch it from the database, never having built it
    write_node(manifests[0].parent, receiver, suffix=" from v2!")
    edgefn(manifests[0], control, "deploy")
    deployed = time.monotonic()
    lag = [wait_for(lambda n=n: body(n) == "Hello from v2!" and time.monotonic() - deployed, 20, f"{n.base} to serve v2") for n in nodes]
    for n in nodes[1:]:
        assert "fetched from the control plane" in n.log.read_text()
    print(f"deploy -> served by all three: {max(lag) * 1000:.0f} ms")

    # a new behavior and a new function: routed by every node without a restart
    extra = '[functions.second]\nsource = "src/hello.c"\nenv = { GREETING = "Second" }\n\n[[behaviors]]\npath_pattern = "/new/*"\nfunction = "second"\n'
    write_node(manifests[0].parent, receiver, suffix=" from v2!", extra=extra)
    edgefn(manifests[0], control, "deploy")
    for n in nodes:
        wait_for(lambda n=n: body(n, "/new/x") == "Second from v2!", 20, f"{n.base} to route /new/*")

    # an alias flip under load: no failed request, each node reports the version it ran
    first = published(edgefn(manifests[0], control, "publish", "hello"))
    edgefn(manifests[0], control, "alias", "set", "hello:live", str(first))
    write_node(manifests[0].parent, receiver, suffix=" from v3!", extra=extra + '\n[[behaviors]]\npath_pattern = "/live/*"\nfunction = "hello:live"\n')
    edgefn(manifests[0], control, "deploy")
    second = published(edgefn(manifests[0], control, "publish", "hello"))
    assert second == first + 1
    for n in nodes:
        wait_for(lambda n=n: body(n, "/live/x") == "Hello from v2!", 20, f"{n.base} to route /live/* to version {first}")

    seen: dict[str, list[tuple[int, str]]] = {n.base: [] for n in nodes}
    stop = threading.Event()

    def load(n: EdgeServer) -> None:
        with httpx.Client(base_url=n.base, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get("/live/x")
                    seen[n.base].append((r.status_code, r.headers.get("x-edgefn-executed-version", "")))
                except httpx.HTTPError as exc:
                    seen[n.base].append((0, type(exc).__name__))

    threads = [threading.Thread(target=load, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(len(v) >= 20 for v in seen.values()), 30, "load on every node")
        edgefn(manifests[0], control, "alias", "set", "hello:live", str(second))
        for n in nodes:
            wait_for(lambda n=n: any(v == f"hello:{second}" for _, v in seen[n.base][-5:]), 20, f"{n.base} to run version {second}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    for base, results in seen.items():
        assert {status for status, _ in results} == {200}, f"{base}: {Counter(results)}"
        versions = [v for _, v in results]
        assert versions[0] == f"hello:{first}" and versions[-1] == f"hello:{second}", f"{base}: {Counter(versions)}"

    listed = wait_for(
        lambda: len(up := [x for x in json.loads(edgefn(manifests[0], control, "nodes", "list", "--json")) if f"hello:{second}" in x["versions"]]) == 3 and up,
        20, "every node's heartbeat to show the new version",
    )
    store = open_control_store(control)
    revision = store.registry.revision()
    store.close()
    assert sorted(x["address"] for x in listed) == sorted(f"127.0.0.1:{n.port}" for n in nodes)
    assert all(x["state"] == "serving" and x["revision"] == revision for x in listed)


def test_kill_9_of_a_node_holding_leases_loses_no_event(tmp_path, postgres_schema, receiver, closing):
    control = postgres_schema
    manifests = [write_node(tmp_path / f"node{i}", receiver) for i in range(2)]
    victim, survivor = serve_nodes(manifests, control, closing)
    store = open_control_store(control)
    try:
        ids = [store.queue.enqueue("slow", event("spin=30"), source="test") for _ in range(300)]
        wait_for(lambda: len({r["requestContext"]["requestId"] for r in receiver.at("/slow")} & set(ids)) >= 30, 60, "deliveries to start")
        kill_group(victim)  # SIGKILL: no shutdown, its leases held
        held = [e for e in store.queue.pending() if e.lease_token]
        assert held, "no event was leased at the kill"

        def accounted() -> set[str]:
            delivered = {r["requestContext"]["requestId"] for r in receiver.at("/slow")}
            dead = {x.id for x in store.queue.dead_letters()}
            return (delivered | dead) & set(ids)

        wait_for(lambda: accounted() == set(ids) and not store.queue.pending(), 180, "every event delivered or dead-lettered by the survivor")
        deliveries = Counter(r["requestContext"]["requestId"] for r in receiver.at("/slow") if r["requestContext"]["requestId"] in set(ids))
        duplicates = sum(c - 1 for c in deliveries.values())
        print(f"300 events, {len(held)} leased at the kill, {duplicates} delivered twice (at least once)")
        assert duplicates <= len(held) + 2 * 2  # only what the killed node had in flight (and its workers' last claims) can repeat
    finally:
        store.close()


def test_a_schedule_fires_once_per_tick_across_three_nodes_and_restarts(tmp_path, postgres_schema, receiver, closing):
    control = postgres_schema
    extra = f'[functions.tick]\nsource = "src/flaky.c"\nasync_invoke = {{ on_success = "{receiver.url}/tick" }}\n\n' \
            '[schedules.minutely]\nfunction = "tick"\nexpression = "rate(1 minute)"\ncatch_up = "all"\n'
    manifests = [write_node(tmp_path / f"node{i}", receiver, extra=extra) for i in range(3)]
    store = open_control_store(control)
    try:
        now = time.time()
        minute = int(now // 60 * 60)
        with store.schedules.transaction() as work:  # as if the fleet last looked 3 minutes ago: 3 ticks missed
            work.reset("minutely", "rate(1 minute)", minute - 600, minute - 180 + 1, None)
        nodes = serve_nodes(manifests, control, closing)
        missed = {minute - 120, minute - 60, minute}

        wait_for(lambda: len(receiver.at("/tick")) >= len(missed), 60, "the missed ticks")
        for cm in closing[1:]:  # two of the three restart between ticks
            cm.__exit__(None, None, None)
        closing[1:] = []
        nodes[1:] = serve_nodes(manifests[1:], control, closing)
        next_tick = minute + 60
        wait_for(lambda: len(receiver.at("/tick")) >= len(missed) + 1, max(90.0, next_tick - time.time() + 60), "the next tick")
        # every event a tick queued (and its destination record) is out of the queue: a duplicate would still be in it
        wait_for(lambda: not store.queue.pending("tick"), 60, "every tick's event delivered")
        fired = [int(t) for t in store.schedules.ticks("minutely")]
        assert len(receiver.at("/tick")) == len(fired) and len(fired) == len(set(fired)), (fired, receiver.at("/tick"))
        assert missed | {next_tick} <= set(fired)
    finally:
        store.close()


def test_postgres_stopped_mid_traffic_edge_keeps_serving_async_gets_503_then_catches_up(tmp_path, receiver, closing):
    with ThrowawayPostgres() as pg, own_schema(pg.url) as control:
        manifests = [write_node(tmp_path / f"node{i}", receiver) for i in range(2)]
        nodes = serve_nodes(manifests, control, closing)
        statuses: list[int] = []
        stop = threading.Event()

        steady = nodes[0]  # node 1 is restarted below: its own requests are checked once it is back

        def load() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    try:
                        statuses.append(client.get(steady.base + "/").status_code)
                    except httpx.HTTPError:
                        statuses.append(0)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_for(lambda: len(statuses) >= 50, 30, "traffic")
            pg.stop()
            during = len(statuses)
            submit = httpx.post(
                f"{nodes[0].admin}/2015-03-31/functions/slow/invocations", content=event("spin=1"),
                headers={**nodes[0].admin_headers, "X-Amz-Invocation-Type": "Event"}, timeout=30,
            )
            assert submit.status_code == 503, submit.text
            assert submit.headers["x-amzn-ErrorType"] == "ServiceUnavailableException"
            # a node restarted while the database is down serves from the snapshot it kept
            closing[1].__exit__(None, None, None)
            closing[1:] = []
            nodes[1:] = serve_nodes(manifests[1:], control, closing)
            with httpx.Client(base_url=nodes[1].base, timeout=10) as client:
                restarted = Counter(client.get("/").status_code for _ in range(50))
            assert restarted == {200: 50}, restarted
            wait_for(lambda: len(statuses) >= during + 100, 60, "traffic during the outage")
            assert "control plane unreachable" in nodes[0].log.read_text()
            assert nodes[0].log.read_text().count("control plane unreachable") == 1  # said once, however many loops saw it
            pg.start()
            accepted = wait_for(
                lambda: (r := httpx.post(
                    f"{nodes[0].admin}/2015-03-31/functions/slow/invocations", content=event("spin=1"),
                    headers={**nodes[0].admin_headers, "X-Amz-Invocation-Type": "Event"}, timeout=30,
                )).status_code == 202 and r, 60, "async submissions accepted again",
            )
            request_id = accepted.headers["x-amzn-RequestId"]
            wait_for(lambda: any(r["requestContext"]["requestId"] == request_id for r in receiver.at("/slow")), 60, "the event delivered")
        finally:
            stop.set()
            thread.join(timeout=30)
            for cm in reversed(closing):
                cm.__exit__(None, None, None)
            closing.clear()
        assert set(statuses) == {200}, Counter(statuses)


# --- the same on the SQLite default (one node) ------------------------------------------------------------


def test_on_sqlite_a_deploy_routes_new_behaviors_and_serve_keeps_api_changes_until_the_manifest_changes(tmp_path, receiver):
    manifest = write_node(tmp_path / "app", receiver)
    control = ["--config", str(manifest)]
    with edge_server(manifest, tls=False) as server:
        extra = '[functions.second]\nsource = "src/hello.c"\nenv = { GREETING = "Second" }\n\n[[behaviors]]\npath_pattern = "/new/*"\nfunction = "second"\n'
        write_node(manifest.parent, receiver, extra=extra)
        assert run_edgefn("deploy", *control, timeout=300).returncode == 0
        wait_for(lambda: body(server, "/new/x") == "Second from edgefn!", 20, "the new route without a restart")
        changed = httpx.put(
            f"{server.admin}/2015-03-31/functions/hello/configuration", json={"Environment": {"Variables": {"GREETING": "Howdy"}}},
            headers=server.admin_headers, timeout=30,
        )
        assert changed.status_code == 200, changed.text
        wait_for(lambda: body(server) == "Howdy from edgefn!", 20, "the API's change")
    with edge_server(manifest, tls=False) as server:  # the manifest did not change: the API's configuration stays
        assert body(server) == "Howdy from edgefn!"
        assert body(server, "/new/x") == "Second from edgefn!"
    write_node(manifest.parent, receiver, suffix=" from the manifest!", extra=extra)
    with edge_server(manifest, tls=False) as server:  # it changed: the manifest's $LATEST wins
        assert body(server) == "Hello from the manifest!"
        write_node(manifest.parent, receiver, suffix=" from the manifest!")  # the /new/* behavior removed
        assert run_edgefn("deploy", *control, timeout=300).returncode == 0
        wait_for(lambda: body(server, "/new/x") == "Hello from the manifest!", 20, "the removed route to fall to the default behavior")


def test_a_control_database_migrated_by_a_newer_edgefn_is_refused_with_the_fix(postgres_schema):
    import psycopg

    from edgefn.control.store.postgres.schema import SCHEMA_VERSION
    from edgefn.core.exceptions import StorageError

    store = open_control_store(postgres_schema)
    assert store.registry.revision() == 0  # migrated on first use
    store.close()
    with psycopg.connect(postgres_schema, autocommit=True) as conn:
        assert conn.execute("SELECT MAX(version) FROM edgefn_schema").fetchone()[0] == SCHEMA_VERSION
        conn.execute("INSERT INTO edgefn_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    store = open_control_store(postgres_schema)
    try:
        with pytest.raises(StorageError) as info:
            store.registry.revision()
        assert f"schema version {SCHEMA_VERSION + 1}, newer than this edgefn knows ({SCHEMA_VERSION})" in str(info.value)
        assert "upgrade edgefn" in str(info.value)
    finally:
        store.close()


def test_nodes_list_shows_each_heartbeat_and_a_node_gone_silent_as_lost(tmp_path, receiver):
    from edgefn.core.records import NodeRecord

    manifest = write_node(tmp_path / "app", receiver)
    store = open_control_store(tmp_path / "app" / ".edgefn" / "control.db")
    now = time.time()
    store.nodes.heartbeat(NodeRecord("a:1:1", "fleet", "10.0.0.1:8787", "a", 1, 7, ("hello:$LATEST", "hello:3"), now - 60, now))
    store.nodes.heartbeat(NodeRecord("b:2:2", "fleet", "10.0.0.2:8787", "b", 2, 6, ("hello:$LATEST",), now - 60, now - 30))
    store.nodes.leave("c:3:3")  # never joined: nothing to take away
    store.close()
    done = run_edgefn("nodes", "list", "--config", str(manifest), timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("10.0.0.1:8787") and "revision 7" in first and "serving" in first and "hello:3" in first
    assert second.startswith("10.0.0.2:8787") and "revision 6" in second and "lost" in second
    as_json = json.loads(run_edgefn("nodes", "list", "--json", "--config", str(manifest), timeout=60).stdout)
    assert [(n["id"], n["state"], n["versions"]) for n in as_json] == [("a:1:1", "serving", ["hello:$LATEST", "hello:3"]), ("b:2:2", "lost", ["hello:$LATEST"])]
    bad = run_edgefn("nodes", "list", "--config", str(manifest), "--control", "mysql://x", timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "postgresql://" in bad.stderr


def test_code_no_version_runs_is_pruned_once_no_deploy_can_be_in_flight_and_silent_nodes_are_forgotten(control_location):
    import hashlib

    from edgefn.control.store.code import PRUNE_AFTER_S
    from edgefn.control.store.nodes import FORGET_AFTER_S
    from edgefn.core.records import NodeRecord

    store = open_control_store(control_location)
    try:
        blobs = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("kept", "old", "new")}
        for name, digest in blobs.items():
            store.code.put(digest, name.encode())
        assert store.code.missing(set(blobs.values()) | {"f" * 64}) == {"f" * 64}
        with store.db.transaction() as conn:  # two of them stored long ago (SqlControlStore.db: the test reaches under the port)
            conn.execute("UPDATE code_blobs SET created_at = created_at - ? WHERE digest IN (?, ?)", (PRUNE_AFTER_S + 60, blobs["kept"], blobs["old"]))
        assert store.code.prune({blobs["kept"]}, dry_run=True) == (1, 3)
        assert store.code.get(blobs["old"]) == b"old"
        assert store.code.prune({blobs["kept"]}) == (1, 3)
        assert store.code.get(blobs["old"]) is None and store.code.get(blobs["kept"]) == b"kept" and store.code.get(blobs["new"]) == b"new"

        now = time.time()
        store.nodes.heartbeat(NodeRecord("gone", "fleet", "10.0.0.9:8787", "g", 9, 1, (), now - 3 * FORGET_AFTER_S, now - 2 * FORGET_AFTER_S))
        store.nodes.heartbeat(NodeRecord("here", "fleet", "10.0.0.1:8787", "h", 1, 1, (), now, now))
        assert [n.id for n in store.nodes.list()] == ["here"]
    finally:
        store.close()
