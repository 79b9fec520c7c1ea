"""End to end: a real `edgefn serve` on 127.0.0.1, real HTTP clients (HTTP/1.1 and h2c), real C guests."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.servers import EXAMPLES_CONFIG, REPO, edge_server, put_example_secrets


@pytest.fixture(scope="module")
def examples():
    put_example_secrets()
    with edge_server(EXAMPLES_CONFIG) as (base, log):
        yield base, log


@pytest.fixture(scope="module")
def hostile():
    with edge_server(REPO / "tests" / "apps" / "hostile" / "edgefn.toml") as (base, log):
        yield base, log


def test_hello_function_as_origin(examples):
    base, _ = examples
    r = httpx.get(f"{base}/")
    assert r.status_code == 200
    assert "Hello" in r.text
    assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["x-edgefn-request-id"])
    timing = r.headers["server-timing"]
    assert re.search(r"origin;dur=\d+\.\d+", timing) and "total;dur=" in timing


def test_reserved_prefix_is_never_a_viewer_path(examples):
    base, _ = examples
    r = httpx.post(f"{base}/_edgefn/schedule/heartbeat", content=b"{}")
    assert r.status_code == 404 and "reserved" in r.text
    # the path a function sees is the one routed, not one rebuilt from a forged Host header
    forged = httpx.get(f"{base}/old/docs", headers={"host": "x/_edgefn/schedule/heartbeat#"})
    assert forged.status_code == 301 and forged.headers["location"] == "/new/docs"


def test_viewer_response_adds_security_headers(examples):
    base, _ = examples
    r = httpx.get(f"{base}/secure/page")
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "max-age" in r.headers["strict-transport-security"]
    assert "viewer-response;dur=" in r.headers["server-timing"]


def test_viewer_request_redirect_short_circuits(examples):
    base, _ = examples
    r = httpx.get(f"{base}/old/docs/intro?page=2")
    assert r.status_code == 301
    assert r.headers["location"] == "/new/docs/intro?page=2"
    assert "origin;dur" not in r.headers["server-timing"]  # the origin never ran


def test_auth_refuses_then_admits(examples):
    base, _ = examples
    refused = httpx.get(f"{base}/private/report")
    assert refused.status_code == 401 and "bearer" in refused.headers["www-authenticate"].lower()
    wrong = httpx.get(f"{base}/private/report", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    admitted = httpx.get(f"{base}/private/report", headers={"authorization": "Bearer let-me-in"})
    assert admitted.status_code == 200


def test_http2_cleartext(examples):
    base, _ = examples
    with httpx.Client(http1=False, http2=True) as client:
        r = client.get(f"{base}/secure/x")
    assert r.http_version == "HTTP/2" and r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY"


def test_info_and_health_endpoints(examples):
    base, _ = examples
    info = httpx.get(f"{base}/_edgefn/info").json()
    assert set(info["functions"]) == {
        "hello", "page", "security-headers", "redirect", "auth", "py-auth", "py-headers", "visits", "kv-redirects", "js-redirect", "ts-api", "zig-hello",
    }
    assert [b["path_pattern"] for b in info["behaviors"]] == ["/js/*", "/api/*", "/zig/*", "/visits/*", "/go/*", "/py/private/*", "/py/headers/*", "/secure/*", "/old/*", "/private/*", "*"]


def test_python_functions_in_the_default_config(examples):
    base, _ = examples
    assert httpx.get(f"{base}/py/private/x").status_code == 401
    admitted = httpx.get(f"{base}/py/private/x", headers={"authorization": "Bearer let-me-in"})
    assert admitted.status_code == 200
    rewritten = httpx.get(f"{base}/py/headers/x")
    assert rewritten.headers["x-frame-options"] == "DENY" and rewritten.headers["cache-control"] == "public, max-age=600"


def test_javascript_typescript_and_zig_functions_in_the_default_config(examples):
    base, _ = examples
    moved = httpx.get(f"{base}/js/old/docs/a.html?x=1")
    assert moved.status_code == 301 and moved.headers["location"] == "/js/new/docs/a.html?x=1"
    assert moved.headers["cache-control"] == "max-age=3600"
    page = httpx.get(f"{base}/js/new/docs/a.html")
    assert page.status_code == 200  # the JS hook let it through to the page
    api = httpx.get(f"{base}/api/items", params={"limit": "3"}, headers={"user-agent": "e2e"})
    assert api.status_code == 200 and api.headers["content-type"] == "application/json"
    doc = api.json()
    assert doc["greeting"] == "Hello from TypeScript" and doc["path"] == "/api/items" and doc["query"] == {"limit": "3"}
    assert doc["userAgent"] == "e2e" and doc["requestId"] == api.headers["x-edgefn-request-id"]
    assert httpx.post(f"{base}/api/items", content=b"x").status_code == 405
    zig = httpx.get(f"{base}/zig/there", headers={"user-agent": "e2e"})
    assert zig.status_code == 200 and zig.text == "Hello from Zig, e2e: you asked for /zig/there\n"
    assert httpx.get(f"{base}/zig/fail").status_code == 503  # a function error, as Lambda@Edge answers it


def test_report_and_access_log_lines(examples):
    base, log = examples
    rid = httpx.get(f"{base}/").headers["x-edgefn-request-id"]
    text = log.read_text()
    assert f"REPORT RequestId: {rid}" in text
    assert f'"request_id": "{rid}"' in text


@pytest.mark.parametrize(
    ("path", "status", "kind", "function"),
    [
        ("/spin/x", 503, "cpu_budget_exhausted", "spin"),
        ("/stall/x", 504, "timeout", "stall"),
        ("/bomb/x", 503, "memory_limit_exceeded", "bomb"),
        ("/crash/x", 503, "trap", "crash"),
        ("/abyss/x", 503, "trap", "abyss"),
    ],
)
def test_hostile_guest_gets_a_precise_status_and_log_line(hostile, path, status, kind, function):
    base, log = hostile
    r = httpx.get(f"{base}{path}", timeout=30)
    assert r.status_code == status
    assert r.headers["x-edgefn-error"] == kind
    rid = r.headers["x-edgefn-request-id"]
    assert rid in r.text and function in r.text
    line = next(line for line in log.read_text().splitlines() if f"{kind}: function '{function}', request {rid}" in line)
    assert line
    assert httpx.get(f"{base}/fine").status_code == 200  # and the server keeps serving


def test_healthy_requests_succeed_while_hostile_ones_run(hostile):
    base, _ = hostile

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            bad = [client.get(p) for p in ("/spin/a", "/bomb/b", "/crash/c", "/stall/d")]
            good = [client.get(f"/fine/{i}") for i in range(12)]
            responses = await asyncio.gather(*bad, *good)
        return [r.status_code for r in responses[len(bad):]]

    assert asyncio.run(burst()) == [200] * 12


def test_no_state_leaks_between_requests(hostile):
    base, _ = hostile
    counts = [httpx.get(f"{base}/count").headers["x-count"] for _ in range(4)]
    assert counts == ["1"] * 4


def test_key_value_functions_in_the_default_config(examples):
    base, _ = examples
    first = httpx.get(f"{base}/visits/e2e-{id(examples)}").json()
    second = httpx.get(f"{base}/visits/e2e-{id(examples)}").json()
    assert second["visits"] == first["visits"] + 1
    assert httpx.get(f"{base}/go/nowhere-mapped").status_code == 200  # no entry: the page
