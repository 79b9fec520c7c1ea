"""The key-value store: its contract on both backends (SQLite, and PostgreSQL through a real server), the
staleness bound of PostgreSQL's per-node read cache, and guests using it through a real `edgefn serve` - the
grants, the budgets in REPORT, the limits, the CLI and the admin API on the same data, and both examples."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from edgefn.control.store import open_kv_store
from edgefn.control.store.kv import prefix_end
from edgefn.core.exceptions import ManifestError
from edgefn.manifest.load import load_manifest
from tests.conftest import GUESTS_C, REPO
from tests.conftest import run_edgefn as edgefn
from tests.servers import edge_server
from tests.services import postgres_url

TOKEN = "kv-test-token"


@pytest.fixture(scope="module")
def pg():
    with postgres_url() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, pg):
    """A store and a namespace of its own (the PostgreSQL database is shared: each test's keys stay apart)."""
    s = open_kv_store(tmp_path / "kv.db") if request.param == "sqlite" else open_kv_store(pg, cache_ttl_s=0)
    try:
        yield s, f"ns-{uuid.uuid4().hex[:12]}"
    finally:
        s.close()


def test_put_get_delete(store):
    s, ns = store
    assert s.get(ns, b"k") is None
    s.put(ns, b"k", b"v1")
    assert s.get(ns, b"k") == b"v1"
    s.put(ns, b"k", b"\x00\xffbinary")
    assert s.get(ns, b"k") == b"\x00\xffbinary"
    assert s.get(ns + "-other", b"k") is None  # namespaces are apart
    assert s.delete(ns, b"k") is True
    assert s.delete(ns, b"k") is False
    assert s.get(ns, b"k") is None


def test_list_by_prefix_in_pages(store):
    s, ns = store
    keys = [b"a/1", b"a/2", b"a/3", b"a/\xff", b"b/1", b"a"]
    for k in keys:
        s.put(ns, k, b"x")
    seen, cursor, pages = [], None, 0
    while True:
        page = s.list(ns, b"a/", cursor, limit=2)
        seen += page.keys
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [b"a/1", b"a/2", b"a/3", b"a/\xff"] and pages == 2
    assert list(s.list(ns).keys) == sorted(keys)
    assert s.list(ns, b"\xff").keys == ()
    with pytest.raises(ValueError, match="not a cursor"):
        s.list(ns, b"", "zz-not-hex")


def test_prefix_end_bounds_every_key_with_the_prefix():
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None


def test_a_ttl_expires_the_key(store):
    s, ns = store
    s.put(ns, b"short", b"v", ttl_s=1)
    s.put(ns, b"long", b"v")
    assert s.get(ns, b"short") == b"v"
    deadline = time.monotonic() + 30
    while s.get(ns, b"short") is not None:
        assert time.monotonic() < deadline, "a 1 s TTL never expired"
        time.sleep(0.1)
    assert s.list(ns).keys == (b"long",)
    assert s.delete(ns, b"short") is False


def test_postgres_reads_are_stale_at_most_the_cache_ttl(pg):
    """Two nodes on one database: a node serves a value it read for at most cache_ttl_s, its own writes at once."""
    ns = f"ns-{uuid.uuid4().hex[:12]}"
    writer = open_kv_store(pg, cache_ttl_s=0)
    slow = open_kv_store(pg, cache_ttl_s=60)  # a long bound: the stale read below is certain
    quick = open_kv_store(pg, cache_ttl_s=0.5)
    try:
        writer.put(ns, b"k", b"old")
        t0 = time.monotonic()
        assert slow.get(ns, b"k") == b"old" and quick.get(ns, b"k") == b"old"
        writer.put(ns, b"k", b"new")
        assert slow.get(ns, b"k") == b"old"  # within its 60 s bound: served from its cache
        assert time.monotonic() - t0 < 60
        while quick.get(ns, b"k") != b"new":  # at most 0.5 s, plus what a busy machine adds
            assert time.monotonic() - t0 < 10, "a 0.5 s staleness bound was not kept"
            time.sleep(0.02)
        slow.put(ns, b"k", b"mine")
        assert slow.get(ns, b"k") == b"mine"  # a node reads its own writes
        slow.delete(ns, b"k")
        assert slow.get(ns, b"k") is None and writer.get(ns, b"k") is None
    finally:
        for s in (writer, slow, quick):
            s.close()


def test_a_grant_of_an_undeclared_namespace_fails_at_load(tmp_path):
    config = tmp_path / "edgefn.toml"
    config.write_text('[kv]\nnamespaces = ["a"]\n[functions.f]\nsource = "f.c"\nkv = ["b"]\n')
    with pytest.raises(ManifestError) as err:
        load_manifest(config)
    assert err.value.key == "functions.f.kv" and "'b' is not declared" in str(err.value) and "[kv] namespaces" in err.value.fix
    config.write_text('[kv]\nnamespaces = ["Bad Name"]\n')
    with pytest.raises(ManifestError, match="kv.namespaces"):
        load_manifest(config)


# --- guests through a real server ---------------------------------------------------------------------


def _manifest(tmp: Path, store: str = ".edgefn/kv.db") -> Path:
    shutil.copy(GUESTS_C / "kv_ops.c", tmp / "kv_ops.c")
    config = tmp / "edgefn.toml"
    config.write_text(
        f'[app]\nname = "kv"\n\n[kv]\nnamespaces = ["data", "private"]\nstore = "{store}"\ncache_ttl_ms = 0\n\n'
        '[functions.ops]\nsource = "kv_ops.c"\nmemory_mb = 16\nkv = ["data"]\nkv_ops = 8\n\n'
        '[default_behavior]\nfunction = "ops"\n'
    )
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kv")
    config = _manifest(tmp)
    with edge_server(config, "--workers", "2", tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        yield server, config


def _function_log(config: Path, function: str) -> list[str]:
    """Every line of a function's log streams (one file per server process)."""
    return [line for f in sorted((config.parent / ".edgefn" / "logs" / function).glob("*.log")) for line in f.read_text().splitlines()]


def _get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base}{path}", headers={"connection": "close"}, timeout=30)  # a new connection: either worker


def test_a_guest_puts_and_every_worker_reads_it(served):
    server, config = served
    assert _get(server, "/put/greeting?hello%20kv").text == "stored"
    for _ in range(8):  # both workers, one file: a put is seen by the next get anywhere on the node
        r = _get(server, "/get/greeting")
        assert r.status_code == 200 and r.text == "hello%20kv"
    cli = edgefn("kv", "get", "data", "greeting", "--config", str(config))
    assert cli.returncode == 0 and cli.stdout == "hello%20kv"
    assert _get(server, "/del/greeting").text == "deleted"
    assert _get(server, "/get/greeting").status_code == 404
    assert _get(server, "/del/greeting").text == "absent"


def test_the_cli_writes_what_guests_read(served, tmp_path):
    server, config = served
    value = tmp_path / "v.bin"
    value.write_bytes(b"from a file")
    assert edgefn("kv", "put", "data", "cli-key", "--file", str(value), "--config", str(config)).returncode == 0
    assert _get(server, "/get/cli-key").text == "from a file"
    listed = edgefn("kv", "list", "data", "--prefix", "cli-", "--config", str(config))
    assert listed.stdout.splitlines() == ["cli-key"]


def test_a_guest_lists_page_by_page(served):
    server, _ = served
    for i in range(5):
        assert _get(server, f"/put/page-{i}?x").text == "stored"
    assert _get(server, "/list/page-").text.splitlines() == [f"page-{i}" for i in range(5)]  # 3 pages of 2


def test_a_guest_ttl_expires(served):
    server, _ = served
    assert _get(server, "/putttl/brief?v").text == "stored"
    deadline = time.monotonic() + 30
    while _get(server, "/get/brief").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_refusals_the_guest_sees_and_the_report_counts(served):
    server, config = served
    other = _get(server, "/other-ns")
    assert other.text == "error: kv refused: namespace 'private' is not granted to this function (kv = ['data'] in its manifest)"
    assert _get(server, "/burn").text == "error: kv refused: over kv_ops: 8 key-value operations in one invocation"
    assert _get(server, "/bigkey").text == "error: kv refused: the key is 513 bytes, over the 512-byte limit"
    rid = _get(server, "/put/counted?12345").headers["x-edgefn-request-id"]
    deadline = time.monotonic() + 30
    while not any(rid in line and "REPORT" in line for line in _function_log(config, "ops")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    report = next(line for line in _function_log(config, "ops") if rid in line and "REPORT" in line)
    assert "KV Ops: 1\tKV Bytes: 12" in report  # "counted" + "12345"
    warned = [line for line in _function_log(config, "ops") if "not granted" in line]
    assert warned and "[edgefn]" in warned[0]


def test_the_admin_api_shares_the_data(served):
    server, _ = served
    auth = {"authorization": f"Bearer {TOKEN}"}
    base = f"{server.admin}/2026-12-01/kv/namespaces"
    assert httpx.get(base, headers=auth).json() == {"Namespaces": [{"Name": "data"}, {"Name": "private"}]}
    assert httpx.put(f"{base}/data/values/api/key", content=b"\x01\x02", headers=auth, params={"ttl": "3600"}).status_code == 204
    assert _get(server, "/get/api/key").content == b"\x01\x02"
    got = httpx.get(f"{base}/data/values/api/key", headers=auth)
    assert got.status_code == 200 and got.content == b"\x01\x02"
    page = httpx.get(f"{base}/data/keys", headers=auth, params={"prefix": "api/"}).json()
    assert page == {"Keys": [{"Name": "api/key"}]}
    assert httpx.delete(f"{base}/data/values/api/key", headers=auth).status_code == 204
    missing = httpx.get(f"{base}/data/values/api/key", headers=auth)
    assert missing.status_code == 404 and missing.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert httpx.get(f"{base}/nope/keys", headers=auth).status_code == 404
    assert httpx.put(f"{base}/data/values/k", content=b"v", headers=auth, params={"ttl": "soon"}).status_code == 400
    assert httpx.get(f"{base}/data/keys", headers={"authorization": "Bearer wrong"}).status_code == 401
    spec = httpx.get(f"{server.admin}/openapi.json", headers=auth).json()
    assert {"/2026-12-01/kv/namespaces/{namespace}/keys", "/2026-12-01/kv/namespaces/{namespace}/values/{key}"} <= set(spec["paths"])


def test_cli_mistakes_are_one_line(served):
    _, config = served
    for args, said in [
        (("kv", "get", "nope", "k"), "namespace 'nope' is not declared"),
        (("kv", "get", "data", "never-set"), "has no value in data"),
        (("kv", "put", "data", "k" * 513, "v"), "over the 512-byte limit"),
        (("kv", "put", "data", "k", "v", "--ttl", "0"), "under the minimum of 1 s"),
        (("kv", "list", "data", "--cursor", "zz"), "is not a cursor"),
    ]:
        proc = edgefn(*args, "--config", str(config))
        assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def test_guests_on_postgres(tmp_path, pg):
    """The same guest on `[kv] store = "postgresql://…"`: what it puts the CLI reads from the database."""
    config = _manifest(tmp_path, store=pg)
    key = f"pg-{uuid.uuid4().hex[:8]}"
    with edge_server(config, tls=False) as server:
        assert _get(server, f"/put/{key}?on%20postgres").text == "stored"
        assert _get(server, f"/get/{key}").text == "on%20postgres"
    cli = edgefn("kv", "get", "data", key, "--config", str(config))
    assert cli.returncode == 0 and cli.stdout == "on%20postgres"


# --- the examples -----------------------------------------------------------------------------------


def test_kv_redirects_example(tmp_path):
    for part in ("kv-redirects", "security-headers"):
        shutil.copytree(REPO / "examples" / part, tmp_path / part, ignore=shutil.ignore_patterns(".edgefn"))
    config = tmp_path / "kv-redirects" / "edgefn.toml"
    with edge_server(config, tls=False) as server:
        assert _get(server, "/old-pricing").status_code == 200  # no entry yet: the page
        assert edgefn("kv", "put", "redirects", "/old-pricing", "/pricing", "--config", str(config)).returncode == 0
        moved = _get(server, "/old-pricing")
        assert moved.status_code == 301 and moved.headers["location"] == "/pricing"


def test_visits_example(tmp_path):
    shutil.copytree(REPO / "examples" / "visits", tmp_path / "visits", ignore=shutil.ignore_patterns(".edgefn"))
    config = tmp_path / "visits" / "edgefn.toml"
    with edge_server(config, tls=False) as server:
        assert _get(server, "/hello").json() == {"path": "/hello", "visits": 1}
        assert _get(server, "/hello").json() == {"path": "/hello", "visits": 2}
        assert _get(server, "/other").json() == {"path": "/other", "visits": 1}
        assert _get(server, "/_top").json() == {"top": [{"path": "/hello", "visits": 2}, {"path": "/other", "visits": 1}]}
    assert edgefn("kv", "get", "visits", "/hello", "--config", str(config)).stdout == "2"


def test_the_visits_handler_unit_tested_without_a_build(monkeypatch):
    """What the SDK README promises: a handler runs on plain CPython against an in-memory namespace."""
    from edgefn_guest import Context, Event, Request
    from edgefn_guest.testing import local_host

    monkeypatch.syspath_prepend(str(REPO / "examples" / "visits" / "src"))
    import visits

    space: dict[bytes, bytes] = {}
    with local_host(kv={"visits": space}):
        event = Event(Context({"eventType": "origin-request", "requestId": "t"}), Request(uri="/x"), None)
        first = visits.handler(event)
        second = visits.handler(event)
    assert b'"visits": 2' in second.body and b'"visits": 1' in first.body and space == {b"/x": b"2"}
