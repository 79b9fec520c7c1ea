"""Hostile guests and hostile viewers against a real `edgefn serve` (docs/security.md, one test per finding).

Every guest is real wasm (WAT compiled here, or the C test guests), every client real (httpx, raw sockets),
and the origin and an "internal" service are real Hypercorn servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import cbor2
import httpx
import pytest

from edgefn.runtime.egress import resolve
from tests.conftest import wat_guest
from tests.origin_app import origin_server, origin_stats
from tests.servers import REPO, edge_server, free_port

FETCHER = REPO / "tests" / "guests" / "c" / "fetcher.c"
SECRET = "hunter2-the-env-secret"
TRIGGERS = {"vreq": "viewer_request", "oreq": "origin_request", "ores": "origin_response", "vres": "viewer_response"}


def doc_guest(doc: dict, before: str = "", extra: str = "", imports: str = "") -> bytes:
    """A guest that runs `before` and then returns the CBOR document `doc` (placed at offset 16)."""
    data = cbor2.dumps(doc)
    escaped = "".join(f"\\{b:02x}" for b in data)
    handle = f"{before} (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len(data)}))"
    return wat_guest(handle, extra=f'(data (i32.const 16) "{escaped}") {extra}', imports=imports)


def switch_guest(host: str, port: int) -> bytes:
    return doc_guest({"origin": {"custom": {"domainName": host, "port": port, "protocol": "http", "path": ""}}})


def header(name: str, value: str) -> dict:
    return {name.lower(): [{"key": name, "value": value}]}


#: table.grow by 150,000,000 elements (1.2 GB of table), ignoring the -1, then a 200
TABLE_BOMB = doc_guest({"status": 200}, before="(drop (table.grow $t (ref.null func) (i32.const 150000000)))", extra="(table $t 1 funcref)")


def many_memories(count: int) -> bytes:
    """`count` unexported memories, each grown 4 times by 16 pages (1 MB) while it can be, then a 200."""
    return doc_guest(
        {"status": 200},
        before=" ".join(f"(drop (memory.grow $m{i} (i32.const 16)))" for i in range(count) for _ in range(4)),
        extra=" ".join(f"(memory $m{i} 1)" for i in range(count)),
    )


FORGED_LINE = '\n{"request_id": "forged", "status": 200, "path": "/admin"}\x1b[31mRED'


def log_forger() -> bytes:
    text = FORGED_LINE.encode()
    escaped = "".join(f"\\{b:02x}" for b in text)
    return doc_guest(
        {"status": 200},
        before=f"(call $log (i32.const 1) (i32.const 4096) (i32.const {len(text)}))",
        extra=f'(data (i32.const 4096) "{escaped}")',
        imports='(import "edgefn:host/v1" "log" (func $log (param i32 i32 i32)))',
    )


SPINNER = wat_guest("(loop $l (br $l)) (unreachable)")
HEALTHY = wat_guest()
DENY = doc_guest({"status": 403, "headers": header("Content-Type", "text/plain")})
FORGES = {
    "rid": header("X-Edgefn-Request-Id", "FORGED"),
    "xcache": header("X-Cache", "Hit from edgefn"),
    "connection": header("Connection", "close"),
    "upgrade": header("Upgrade", "h2c"),
}


def name_for_loopback() -> str:
    """A host name (not a literal, not `localhost`) that this machine resolves to a loopback address."""
    for name in (socket.gethostname(), "vm", "runsc", "ip6-localhost"):
        try:
            if name and name != "localhost" and all(a.is_loopback for a in resolve(name, 80)):
                return name
        except Exception:  # noqa: BLE001 - try the next
            continue
    raise AssertionError("no host name on this machine resolves to loopback (checked hostname, vm, runsc, ip6-localhost)")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    origin_port, internal_port, dead_port = free_port(), free_port(), free_port()
    edge_port, admin_port = free_port(), free_port()
    while admin_port == edge_port:
        admin_port = free_port()
    wasm: dict[str, Path] = {}

    def put(name: str, code: bytes) -> str:
        wasm[name] = tmp / f"{name}.wasm"
        wasm[name].write_bytes(code)
        return str(wasm[name])

    loopback_name = name_for_loopback()
    origin = f"http://127.0.0.1:{origin_port}"
    fns = [
        f'[functions.to-admin]\nsource = "{put("to-admin", switch_guest("127.0.0.1", admin_port))}"\nenv = {{ SECRET = "{SECRET}" }}\n',
        f'[functions.to-internal]\nsource = "{put("to-internal", switch_guest("127.0.0.1", internal_port))}"\n',
        f'[functions.to-declared]\nsource = "{put("to-declared", switch_guest("127.0.0.1", origin_port))}"\n',
        f'[functions.to-self]\nsource = "{put("to-self", switch_guest("127.0.0.1", edge_port))}"\n',
        f'[functions.to-self-allowed]\nsource = "{wasm["to-self"]}"\nallowed_hosts = ["127.0.0.1:{edge_port}"]\n',
        f'[functions.fetch-open]\nsource = "{FETCHER}"\nallowed_hosts = ["127.0.0.1"]\ntimeout_ms = 10000\n',
        f'[functions.fetch-named]\nsource = "{FETCHER}"\nallowed_hosts = ["{loopback_name}:{origin_port}"]\n',
        f'[functions.tablebomb]\nsource = "{put("tablebomb", TABLE_BOMB)}"\nmemory_mb = 16\n',
        f'[functions.manymem]\nsource = "{put("manymem", many_memories(12))}"\nmemory_mb = 16\n',
        f'[functions.fortymem]\nsource = "{put("fortymem", many_memories(40))}"\nmemory_mb = 16\n',
        f'[functions.logforge]\nsource = "{put("logforge", log_forger())}"\n',
        f'[functions.deny]\nsource = "{put("deny", DENY)}"\n',
        f'[functions.spinner]\nsource = "{put("spinner", SPINNER)}"\nfuel = 1_000_000_000_000\ntimeout_ms = 1500\n',
        f'[functions.healthy]\nsource = "{put("healthy", HEALTHY)}"\n',
        *(f'[functions.forge-{k}]\nsource = "{put(f"forge-{k}", doc_guest({"status": 200, "headers": h}))}"\n' for k, h in FORGES.items()),
    ]

    def behavior(pattern: str, body: str, host: str | None = None) -> str:
        host_line = f'host_pattern = "{host}"\n' if host else ""
        return f'[[behaviors]]\npath_pattern = "{pattern}"\n{host_line}{body}\n'

    behaviors = [
        behavior("/switch-admin/*", f'origin = "{origin}"\norigin_request = {{ function = "to-admin" }}'),
        behavior("/switch-internal/*", f'origin = "{origin}"\norigin_request = {{ function = "to-internal" }}'),
        behavior("/switch-declared/*", f'origin = "http://127.0.0.1:{dead_port}"\norigin_request = {{ function = "to-declared" }}'),
        behavior("/switch-self/*", f'origin = "{origin}"\norigin_request = {{ function = "to-self" }}'),
        behavior("/switch-self-allowed/*", f'origin = "{origin}"\norigin_request = {{ function = "to-self-allowed" }}'),
        behavior("/fetch-open/*", 'function = "fetch-open"'),
        behavior("/fetch-named/*", 'function = "fetch-named"'),
        behavior("/loop/*", f'origin = "http://127.0.0.1:{edge_port}"'),
        behavior("/private/*", f'origin = "{origin}"\nviewer_request = {{ function = "deny" }}'),
        behavior("/*", f'origin = "{origin}"\nviewer_request = {{ function = "deny" }}', host="secure.example"),
        *(behavior(f"/mem-{t}/*", f'origin = "{origin}"\n{key} = {{ function = "tablebomb" }}') for t, key in TRIGGERS.items()),
        behavior("/mem-origin/*", 'function = "tablebomb"'),
        behavior("/mem-many/*", 'function = "manymem"'),
        behavior("/mem-forty/*", 'function = "fortymem"'),
        *(behavior(f"/log-{t}/*", f'origin = "{origin}"\n{key} = {{ function = "logforge" }}') for t, key in TRIGGERS.items()),
        behavior("/log-origin/*", 'function = "logforge"'),
        *(behavior(f"/forge-{k}/*", f'function = "forge-{k}"') for k in FORGES),
        behavior("/spin/*", 'function = "spinner"'),
        behavior("/healthy/*", 'function = "healthy"'),
        behavior("/personal/*", f'origin = "{origin}"\ncache = {{ default_ttl = 60 }}'),
        behavior("/keyed-cookie/*", f'origin = "{origin}"\ncache = {{ default_ttl = 60, cookies = ["lang"], headers = ["accept-language"] }}'),
        behavior("/err-cookie/*", f'origin = "{origin}"\ncache = {{ query_strings = ["*"] }}'),
    ]
    manifest = "\n".join(
        ['[app]\nname = "security"\n', "[server]\nguest_threads = 2\n", *fns, *behaviors, f'[default_behavior]\norigin = "{origin}"\n']
    )
    config = tmp / "edgefn.toml"
    config.write_text(manifest)
    with origin_server(origin_port), origin_server(internal_port) as internal:
        with edge_server(config, tls=False, port=edge_port, admin_port=admin_port) as server:
            yield {"server": server, "origin": origin, "internal": internal, "origin_port": origin_port, "admin_port": admin_port}


def get(env: dict, path: str, **kw: object) -> httpx.Response:
    return httpx.get(f"{env['server'].base}{path}", timeout=60, **kw)  # type: ignore[arg-type]


def log_lines(env: dict, rid: str) -> list[str]:
    return [line for line in env["server"].log.read_text().splitlines() if rid in line]


def raw_request(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes on a fresh connection; everything the server sends until it closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    found = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    assert found, raw[:200]
    return int(found.group(1))


# --- 1. outbound requests a guest causes ----------------------------------------------------------------


def test_origin_switch_to_the_admin_api_is_refused_and_leaks_nothing(env):
    r = get(env, "/switch-admin/2015-03-31/functions/to-admin")
    assert r.status_code == 502 and r.headers["x-edgefn-error"] == "rule_violation"
    assert SECRET not in r.text and "FunctionConfiguration" not in r.text and "Environment" not in r.text
    put = httpx.put(f"{env['server'].base}/switch-admin/2015-03-31/functions/to-admin/configuration", json={"Environment": {}}, timeout=60)
    assert put.status_code == 502
    line = next(line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "rule_violation" in line)
    assert "'to-admin'" in line and "origin switch refused" in line and f"127.0.0.1:{env['admin_port']}" in line
    admin = env["server"]
    config = httpx.get(f"{admin.admin}/2015-03-31/functions/to-admin", headers=admin.admin_headers, timeout=10).json()["Configuration"]
    assert config["Environment"]["Variables"]["SECRET"] == SECRET  # unchanged by the viewer's PUT


def test_origin_switch_to_an_undeclared_loopback_service_is_refused(env):
    before = origin_stats(env["internal"]).get("/switch-internal/x", 0)
    r = get(env, "/switch-internal/x")
    assert r.status_code == 502 and r.headers["x-edgefn-error"] == "rule_violation"
    assert origin_stats(env["internal"]).get("/switch-internal/x", 0) == before  # never reached
    assert "not in this function's allowed_hosts" in "\n".join(log_lines(env, r.headers["x-edgefn-request-id"]))


def test_origin_switch_to_a_declared_origin_still_works(env):
    r = get(env, "/switch-declared/ok")
    assert r.status_code == 200 and r.json()["path"] == "/switch-declared/ok"


@pytest.mark.parametrize("path", ["/switch-self/x", "/switch-self-allowed/x"])
def test_origin_switch_to_the_edge_itself_is_refused_even_when_listed(env, path):
    r = get(env, path)
    assert r.status_code == 502
    assert "own listener" in "\n".join(log_lines(env, r.headers["x-edgefn-request-id"]))


def test_fetch_never_reaches_the_nodes_own_listeners(env):
    admin = f"http://127.0.0.1:{env['admin_port']}/2015-03-31/functions"
    r = get(env, "/fetch-open/x", params={"url": admin})
    assert "own listener" in r.headers["x-fetch-error"] and "x-fetch-status" not in r.headers
    ok = get(env, "/fetch-open/x", params={"url": f"{env['origin']}/fetched"})
    assert ok.headers["x-fetch-status"] == "200"


def test_fetch_refuses_a_name_that_resolves_to_loopback(env):
    r = get(env, "/fetch-named/x", params={"url": f"http://{name_for_loopback()}:{env['origin_port']}/named"})
    assert "resolves to 127." in r.headers["x-fetch-error"] or "resolves to ::1" in r.headers["x-fetch-error"]
    assert "/named" not in origin_stats(env["origin"])


def test_redirects_are_not_followed_for_guests(env):
    target = f"http://127.0.0.1:{env['admin_port']}/2015-03-31/functions"
    r = get(env, "/fetch-open/x", params={"url": f"{env['origin']}/redirect?redirect={target}"})
    assert r.headers["x-fetch-status"] == "302"  # the guest sees the redirect; following it would be its own (checked) fetch


# --- 2. memory caps -------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@pytest.mark.parametrize("trigger", [*TRIGGERS, "origin"])
def test_table_grow_cannot_allocate_past_memory_mb_on_any_trigger(env, trigger):
    pid = env["server"].proc.pid
    before = rss_bytes(pid)
    for _ in range(2):
        r = get(env, f"/mem-{trigger}/x")
        assert r.status_code == 200  # the guest saw table.grow return -1 and carried on
        report = next(line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "REPORT" in line)
        used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
        assert used <= 16
    assert rss_bytes(pid) - before < 100 * 1024 * 1024  # 1.2 GB per request before the cap


def test_unexported_memories_share_one_memory_mb_budget(env):
    pid = env["server"].proc.pid
    before = rss_bytes(pid)
    r = get(env, "/mem-many/x")
    assert r.status_code == 200  # 12 memories: every grow past the shared budget returned -1
    report = next(line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "REPORT" in line)
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert 15 <= used <= 16  # all 12 memories counted together, up to the cap
    assert rss_bytes(pid) - before < 100 * 1024 * 1024  # 12 x 4 MB asked for, 16 MB given


def test_more_memories_than_an_instance_may_have_is_a_memory_limit_at_instantiation(env):
    r = get(env, "/mem-forty/x")
    assert r.status_code == 503 and r.headers["x-edgefn-error"] == "memory_limit_exceeded"
    line = next(line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "memory_limit_exceeded:" in line)
    assert "'fortymem'" in line and "16 MB" in line and "memory count" in line


# --- 3. one normalised path and host --------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/public/../private/secret", "/public/%2e%2e/private/secret", "/./private/secret", "/public/.%2E/private/secret"])
def test_dot_segments_cannot_walk_past_a_protected_behavior(env, target):
    raw = raw_request(env["server"].port, f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode())
    assert status_of(raw) == 403  # the /private/* hook ran on the normalised path
    assert "/private/secret" not in origin_stats(env["origin"])


@pytest.mark.parametrize("target", ["/public/..%2fprivate/secret", "/public/%2F../private/secret", "/public/..%5cprivate/secret"])
def test_encoded_separators_are_refused(env, target):
    raw = raw_request(env["server"].port, f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode())
    assert status_of(raw) == 400 and b"encoded" in raw
    assert not [p for p in origin_stats(env["origin"]) if "private" in p]


def test_normalised_path_is_what_the_origin_gets(env):
    raw = raw_request(env["server"].port, b"GET /a/b/../c/./d%20e HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200 and b'"path":"/a/c/d e"' in raw


@pytest.mark.parametrize("host", ["secure.example.", "SECURE.Example", "secure.example.:8080"])
def test_host_patterns_match_without_case_or_trailing_dot(env, host):
    r = get(env, "/anything", headers={"host": host})
    assert r.status_code == 403


# --- 4. loops -------------------------------------------------------------------------------------------


def test_an_origin_that_is_the_edge_itself_ends_in_508(env):
    r = get(env, "/loop/x")
    assert r.status_code == 508 and "Loop Detected" in r.text


def test_too_many_hops_is_508_before_any_function_runs(env):
    r = get(env, "/healthy/x", headers={"via": "1.1 edgefn, 1.1 cdn.example (proxy), 1.1 edgefn, 1.1 edgefn"})
    assert r.status_code == 508
    assert not [line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "START" in line]
    assert get(env, "/healthy/x", headers={"via": "1.1 edgefn"}).status_code == 200  # a tiered edge is fine


# --- 5. the cache never shares what is private ------------------------------------------------------------


def test_unkeyed_cookie_is_not_forwarded_so_cannot_be_served_to_others(env):
    first = get(env, "/personal/page", headers={"cookie": "user=alice; token=s3cr3t"})
    assert first.status_code == 200 and "alice" not in first.text and "s3cr3t" not in first.text
    anon = get(env, "/personal/page")
    assert anon.headers["x-cache"] == "Hit from edgefn" and "alice" not in anon.text


@pytest.mark.parametrize("name", ["x-forwarded-host", "accept-language", "authorization"])
def test_unkeyed_headers_are_not_forwarded(env, name):
    r = get(env, f"/personal/h-{name}", headers={name: "evil.example<script>"})
    assert name not in r.json()["headers"] and "evil.example" not in r.text
    assert "evil.example" not in get(env, f"/personal/h-{name}").text  # nor does the next viewer get it


def test_unkeyed_query_parameters_are_not_forwarded(env):
    r = get(env, "/personal/q", params={"evil": "<script src=//evil>"})
    assert r.json()["query"] == ""


def test_keyed_cookies_and_headers_are_forwarded_and_only_them(env):
    r = get(env, "/keyed-cookie/x", headers={"cookie": "lang=fr; token=s3cr3t", "accept-language": "fr"})
    seen = r.json()["headers"]
    assert seen["cookie"] == "lang=fr" and seen["accept-language"] == "fr"
    other = get(env, "/keyed-cookie/x", headers={"cookie": "lang=de", "accept-language": "fr"})
    assert other.json()["headers"]["cookie"] == "lang=de"  # another key: another fetch


def test_a_5xx_with_set_cookie_is_never_shared_with_coalesced_waiters(env):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=env["server"].base, timeout=60) as client:
            return await asyncio.gather(*(client.get("/err-cookie/x", params={"status": "503", "setcookie": "1", "delay": "0.5"}) for _ in range(6)))

    responses = asyncio.run(burst())
    cookies = [r.headers.get("set-cookie") for r in responses]
    assert all(r.status_code == 503 for r in responses)
    assert len(set(cookies)) == 6  # each viewer got its own session, never another's
    assert origin_stats(env["origin"])["/err-cookie/x"] == 6


# --- 6. fair CPU between functions, and fetches that hold no CPU slot ---------------------------------------


def test_a_function_burning_its_budget_cannot_take_every_guest_slot(env):
    async def scenario() -> tuple[float, list[float]]:
        async with httpx.AsyncClient(base_url=env["server"].base, timeout=60) as client:
            async def timed(path: str) -> float:
                r = await client.get(path)
                assert r.status_code in (200, 504)
                return time.monotonic()

            spins = [asyncio.create_task(timed(f"/spin/{i}")) for i in range(4)]
            deadline = time.monotonic() + 30
            while "edgefn.function.spinner START" not in env["server"].log.read_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            healthy_done = await timed("/healthy/x")
            return healthy_done, list(await asyncio.gather(*spins))

    healthy_done, spins_done = asyncio.run(scenario())
    # two guest slots, four spinners of 1.5 s each: the spinner may hold one slot, never both
    assert healthy_done < min(spins_done)


def test_slow_fetches_hold_no_guest_slot(env):
    async def scenario() -> tuple[float, list[float]]:
        async with httpx.AsyncClient(base_url=env["server"].base, timeout=60) as client:
            async def fetch(i: int) -> float:
                r = await client.get("/fetch-open/x", params={"url": f"{env['origin']}/slow-{i}?delay=3"})
                assert r.headers.get("x-fetch-status") == "200", r.headers
                return time.monotonic()

            slow = [asyncio.create_task(fetch(i)) for i in range(16)]
            deadline = time.monotonic() + 30
            while sum(1 for p in origin_stats(env["origin"]) if p.startswith("/slow-")) < 16 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            r = await client.get("/healthy/x")
            assert r.status_code == 200
            return time.monotonic(), list(await asyncio.gather(*slow))

    healthy_done, slow_done = asyncio.run(scenario())
    assert healthy_done < min(slow_done)  # 16 fetches in flight on 2 guest slots, and a healthy call still ran


# --- 8. guest log text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", [*TRIGGERS, "origin"])
def test_a_guest_cannot_forge_a_server_log_line_on_any_trigger(env, trigger):
    r = get(env, f"/log-{trigger}/x")
    rid = r.headers["x-edgefn-request-id"]
    text = env["server"].log.read_text()
    assert not [line for line in text.splitlines() if line.startswith('{"request_id": "forged"')]
    assert "\x1b" not in text
    mine = [line for line in log_lines(env, rid) if "forged" in line]
    assert len(mine) == 1 and '\\n{"request_id": "forged"' in mine[0] and "\\x1b[31mRED" in mine[0]
    assert "edgefn.function.logforge" in mine[0]  # marked as the function's own stream


# --- 10. a function acting as the origin obeys the header rules -------------------------------------------------


@pytest.mark.parametrize("kind,name", [("rid", "x-edgefn-request-id"), ("xcache", "x-cache"), ("connection", "connection"), ("upgrade", "upgrade")])
def test_function_as_origin_cannot_set_edge_or_hop_by_hop_headers(env, kind, name):
    r = get(env, f"/forge-{kind}/x")
    assert r.status_code == 502 and r.headers["x-edgefn-error"] == "rule_violation"
    assert r.headers["x-edgefn-request-id"] != "FORGED" and r.headers["x-cache"] != "Hit from edgefn"
    line = next(line for line in log_lines(env, r.headers["x-edgefn-request-id"]) if "rule_violation" in line)
    assert f"'forge-{kind}'" in line and f"{name!r}" in line and "disallowed" in line
