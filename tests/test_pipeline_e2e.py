"""Every pipeline rule through real servers: edgefn on 127.0.0.1 in front of a real origin on another port."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import cbor2
import httpx
import pytest

from tests.conftest import wat_guest
from tests.origin_app import origin_server, origin_stats
from tests.servers import REPO, edge_server, free_port

RULEBREAKER = REPO / "tests" / "guests" / "c" / "rulebreaker.c"
FETCHER = REPO / "tests" / "guests" / "c" / "fetcher.c"
MODES = ["set-host", "add-connection", "change-status", "big-response", "body-info", "response-body-info", "continue"]


def manifest(origin: str, switch_wasm: Path, dead_port: int) -> str:
    fns = "\n".join(
        f'[functions.{m}]\nsource = "{RULEBREAKER}"\nenv = {{ MODE = "{m}" }}\n' for m in MODES
    )
    tags = "\n".join(
        f'[functions.tag-{t}]\nsource = "{RULEBREAKER}"\nenv = {{ MODE = "tag", TAG = "{t}" }}\n' for t in ("vreq", "oreq", "ores", "vres")
    )

    def behavior(pattern: str, extra: str, target: str = f'origin = "{origin}"') -> str:
        return f'[[behaviors]]\npath_pattern = "{pattern}"\n{target}\n{extra}\n'

    all_continue = (
        'viewer_request = { function = "continue" }\norigin_request = { function = "continue", include_body = true }\n'
        'origin_response = { function = "continue" }\nviewer_response = { function = "continue", include_body = true }'
    )
    all_tags = (
        'viewer_request = { function = "tag-vreq" }\norigin_request = { function = "tag-oreq" }\n'
        'origin_response = { function = "tag-ores" }\nviewer_response = { function = "tag-vres" }'
    )
    return "\n".join(
        [
            '[app]\nname = "pipeline"\n',
            fns,
            tags,
            f'[functions.switch]\nsource = "{switch_wasm}"\n',
            f'[functions.fetcher]\nsource = "{FETCHER}"\nallowed_hosts = ["127.0.0.1"]\ntimeout_ms = 1000\n',
            f'[functions.fetcher-jailed]\nsource = "{FETCHER}"\nallowed_hosts = ["api.example.com"]\n',
            behavior("/fetch/*", "", target='function = "fetcher"'),
            behavior("/jailed/*", "", target='function = "fetcher-jailed"'),
            behavior("/ro/*", 'viewer_request = { function = "set-host" }'),
            behavior("/disallowed/*", 'origin_response = { function = "add-connection" }'),
            behavior("/status/*", 'viewer_response = { function = "change-status" }'),
            behavior("/big-viewer/*", 'viewer_request = { function = "big-response" }'),
            behavior("/big-origin/*", 'origin_request = { function = "big-response" }'),
            behavior("/body/*", 'viewer_request = { function = "body-info", include_body = true }'),
            behavior("/nobody/*", 'viewer_request = { function = "body-info" }'),
            behavior("/origin-body/*", 'origin_response = { function = "response-body-info", include_body = true }'),
            behavior("/tags/*", all_tags),
            behavior("/continue/*", all_continue),
            behavior("/switch/*", 'origin_request = { function = "switch" }', target=f'origin = "http://127.0.0.1:{dead_port}"'),
            behavior("/slow/*", "origin_read_timeout_ms = 300"),
            behavior("/cached/*", 'origin_request = { function = "tag-oreq" }\nviewer_response = { function = "tag-vres" }\ncache = { query_strings = ["*"] }'),  # the origin reads cc/etag/vary: forwarded only when keyed
            behavior("/keyed/*", 'cache = { query_strings = ["page"], headers = ["accept-language"] }'),
            behavior("/cached-gen/*", 'origin_request = { function = "big-response" }\ncache = { default_ttl = 60 }'),
            behavior("/down/*", "", target=f'origin = "http://127.0.0.1:{dead_port}"'),
            f'[default_behavior]\norigin = "{origin}"\n',
        ]
    )


def switch_guest(origin_port: int) -> bytes:
    """origin-request: returns the request with origin switched to the real origin (the behavior's is dead)."""
    doc = cbor2.dumps({"origin": {"custom": {"domainName": "127.0.0.1", "port": origin_port, "protocol": "http", "path": ""}}})
    data = "".join(f"\\{b:02x}" for b in doc)
    handle = f"(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len(doc)}))"
    return wat_guest(handle, extra=f'(data (i32.const 16) "{data}")')


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    origin_port, dead_port = free_port(), free_port()
    switch = tmp / "switch.wasm"
    switch.write_bytes(switch_guest(origin_port))
    config = tmp / "edgefn.toml"
    with origin_server(origin_port) as origin:
        config.write_text(manifest(origin, switch, dead_port))
        with edge_server(config) as (base, log):
            yield base, origin, log


def get(base: str, path: str, **kw) -> httpx.Response:
    return httpx.request(kw.pop("method", "GET"), f"{base}{path}", timeout=30, **kw)


def test_read_only_header_change_is_a_502_naming_function_trigger_and_header(servers):
    base, origin, log = servers
    r = get(base, "/ro/x")
    assert r.status_code == 502 and r.headers["x-edgefn-error"] == "rule_violation"
    rid = r.headers["x-edgefn-request-id"]
    line = next(entry for entry in log.read_text().splitlines() if rid in entry and "rule_violation" in entry)
    assert "'set-host'" in line and "viewer-request" in line and "'host'" in line and "read-only" in line
    assert "/ro/x" not in origin_stats(origin)  # the origin never saw it


def test_disallowed_header_from_origin_response_is_a_502(servers):
    base, _, log = servers
    r = get(base, "/disallowed/x")
    assert r.status_code == 502
    assert "'connection' is a disallowed header" in log.read_text()


def test_viewer_response_may_not_change_the_status(servers):
    base, _, log = servers
    r = get(base, "/status/x")
    assert r.status_code == 502
    assert "viewer-response may not change the status (was 200, now 299)" in log.read_text()


def test_generated_response_size_limits_per_trigger(servers):
    base, origin, _ = servers
    viewer = get(base, "/big-viewer/x")
    assert viewer.status_code == 502  # 50,000 bytes > 40 KB for viewer triggers
    origin_side = get(base, "/big-origin/x")
    assert origin_side.status_code == 200 and len(origin_side.content) == 50_000  # fine under 1 MB
    assert "/big-origin/x" not in origin_stats(origin)  # generated at origin-request: no origin fetch


def test_include_body_truncates_at_the_viewer_limit_but_the_origin_gets_it_all(servers):
    base, _, _ = servers
    body = b"b" * 50_000
    r = get(base, "/body/x", method="POST", content=body)
    seen = r.json()
    assert seen["headers"]["x-body-len"] == str(40 * 1024)
    assert seen["headers"]["x-body-truncated"] == "1"
    assert len(seen["body"]) == 50_000
    small = get(base, "/body/y", method="POST", content=b"hello").json()
    assert (small["headers"]["x-body-len"], small["headers"]["x-body-truncated"]) == ("5", "0")
    hidden = get(base, "/nobody/y", method="POST", content=b"hello").json()
    assert hidden["headers"]["x-body-len"] == "0"  # include_body off: the function sees no body


def test_origin_response_include_body(servers):
    base, _, _ = servers
    r = get(base, "/origin-body/x?size=2000000")
    assert r.headers["x-body-len"] == str(1024 * 1024) and r.headers["x-body-truncated"] == "1"
    assert len(r.content) == 2_000_000  # the viewer still gets the whole body


def test_all_four_hooks_run_in_order_and_viewer_response_is_skipped_for_origin_errors(servers):
    base, _, _ = servers
    ok = get(base, "/tags/a")
    seen = ok.json()["headers"]
    assert seen["x-tag-vreq"] == "1" and seen["x-tag-oreq"] == "1"  # request hooks reached the origin
    assert ok.headers["x-tag-ores"] == "1" and ok.headers["x-tag-vres"] == "1"
    timing = ok.headers["server-timing"]
    assert timing.index("viewer-request") < timing.index("origin-request") < timing.index("origin;") < timing.index("origin-response") < timing.index("viewer-response")
    err = get(base, "/tags/b?status=404")
    assert err.status_code == 404
    assert err.headers["x-tag-ores"] == "1"  # origin-response runs for 4xx too
    assert "x-tag-vres" not in err.headers  # viewer-response is skipped for origin errors


def test_hooks_that_change_nothing_pass_request_and_response_through_untouched(servers):
    """Four hooks that return edgefn_continue: the origin gets the viewer's request (headers hidden from the
    functions included, and the whole body past the truncated copy a function saw), the viewer the origin's
    response."""
    base, _, _ = servers
    body = b"x" * (1024 * 1024 + 10)  # past origin-request's 1 MB exposed-body limit: the function saw a cut copy
    headers = {"x-real-ip": "192.0.2.1", "x-custom": "kept", "accept-language": "de"}
    r = get(base, "/continue/a?q=1", method="POST", content=body, headers=headers)
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == "POST" and seen["path"] == "/continue/a" and seen["query"] == "q=1"
    assert seen["body"] == body.decode()
    assert seen["headers"]["x-real-ip"] == "192.0.2.1" and seen["headers"]["x-custom"] == "kept" and seen["headers"]["accept-language"] == "de"
    assert r.headers["x-origin-count"] and r.headers["content-type"] == "application/json"
    stages = [part.split(";")[0] for part in r.headers["server-timing"].split(", ")]
    assert stages == ["viewer-request", "origin-request", "origin", "origin-response", "viewer-response", "total"]
    assert r.headers["x-edgefn-executed-version"] == ", ".join(["continue:$LATEST"] * 4)


def test_origin_request_can_switch_the_origin(servers):
    base, origin, _ = servers
    r = get(base, "/switch/here")
    assert r.status_code == 200 and r.json()["path"] == "/switch/here"
    assert origin_stats(origin)["/switch/here"] == 1


def test_origin_down_is_502_and_slow_origin_is_504(servers):
    base, _, log = servers
    down = get(base, "/down/x")
    assert down.status_code == 502 and "unreachable" in down.text
    slow = get(base, "/slow/x?delay=2")
    assert slow.status_code == 504 and "timeout" in slow.text
    assert httpx.get(f"{base}/fine").status_code == 200


def test_large_origin_response_streams_through(servers):
    base, _, _ = servers
    size = 8 * 1024 * 1024

    async def fetch() -> tuple[int, int, int]:
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("GET", f"{base}/large?size={size}") as r:
                first = None
                total = 0
                async for chunk in r.aiter_raw():
                    first = first if first is not None else len(chunk)
                    total += len(chunk)
                return r.status_code, total, first or 0

    status, total, first = asyncio.run(fetch())
    assert status == 200 and total == size
    assert first < size  # it arrived in pieces, not as one buffered body


def test_oversized_requests_are_refused_before_any_function_runs(servers):
    base, origin, _ = servers
    assert get(base, "/tags/" + "a" * 9000).status_code == 414
    assert get(base, "/tags/huge-headers", headers={f"x-big-{i}": "v" * 1000 for i in range(25)}).status_code == 431
    assert get(base, "/tags/huge-body", method="POST", content=b"x" * (7 * 1024 * 1024)).status_code == 413
    stats = origin_stats(origin)
    assert "/tags/huge-headers" not in stats and "/tags/huge-body" not in stats


def test_function_fetches_only_from_allowed_hosts(servers):
    base, origin, log = servers
    ok = get(base, f"/fetch/x?url={origin}/upstream/thing")
    assert ok.status_code == 200 and ok.headers["x-fetch-status"] == "200"
    assert ok.json()["path"] == "/upstream/thing"
    refused = get(base, f"/jailed/x?url={origin}/upstream/other")
    assert "x-fetch-status" not in refused.headers
    assert "allowed_hosts" in refused.headers["x-fetch-error"]
    assert "/upstream/other" not in origin_stats(origin)
    assert "fetch refused: host '127.0.0.1:" in log.read_text()


def test_fetch_is_bounded_by_the_functions_wall_clock_limit(servers):
    base, origin, _ = servers
    started = time.monotonic()
    r = get(base, f"/fetch/x?url={origin}/upstream/slow?delay=5")
    # the guest stopped at its deadline (504), its fetch timed out, or (a loaded machine) the deadline had passed
    # before the fetch began: every way, well before the upstream's 5 s answer
    error = r.headers.get("x-fetch-error", "")
    assert r.status_code == 504 or "timed out" in error or "wall-clock limit has passed" in error, (r.status_code, r.headers, r.text[:500])
    assert time.monotonic() - started < 4.5


def xcache(r: httpx.Response) -> str:
    return r.headers["x-cache"].split(" ")[0]


def test_miss_then_hit_runs_origin_hooks_only_on_the_miss(servers):
    base, origin, _ = servers
    first = get(base, "/cached/a?cc=max-age=60")
    second = get(base, "/cached/a?cc=max-age=60")
    assert (xcache(first), xcache(second)) == ("Miss", "Hit")
    assert origin_stats(origin)["/cached/a"] == 1
    assert int(second.headers["age"]) >= 0 and second.json() == first.json()
    assert "origin-request" in first.headers["server-timing"] and "origin-request" not in second.headers["server-timing"]
    assert first.headers["x-tag-vres"] == second.headers["x-tag-vres"] == "1"  # viewer-response on hit and miss


def test_no_store_and_private_are_never_cached(servers):
    base, origin, _ = servers
    for cc in ("no-store", "private"):
        statuses = [xcache(get(base, f"/cached/{cc}?cc={cc}")) for _ in range(2)]
        assert statuses == ["Miss", "Miss"]
        assert origin_stats(origin)[f"/cached/{cc}"] == 2


def test_vary_separates_variants(servers):
    base, origin, _ = servers
    path = "/cached/vary?cc=max-age=60&vary=accept-language"
    en = get(base, path, headers={"accept-language": "en"})
    fr = get(base, path, headers={"accept-language": "fr"})
    en2 = get(base, path, headers={"accept-language": "en"})
    assert (xcache(en), xcache(fr), xcache(en2)) == ("Miss", "Miss", "Hit")
    assert origin_stats(origin)["/cached/vary"] == 2


def test_cache_key_uses_only_allowlisted_query_params_and_headers(servers):
    base, origin, _ = servers
    a = get(base, "/keyed/p?page=1&utm=a&cc=max-age=60")
    b = get(base, "/keyed/p?utm=b&page=1&cc=max-age=60")
    c = get(base, "/keyed/p?page=2&cc=max-age=60")
    d = get(base, "/keyed/p?page=1&cc=max-age=60", headers={"accept-language": "de"})
    assert [xcache(r) for r in (a, b, c, d)] == ["Miss", "Hit", "Miss", "Miss"]


def test_concurrent_misses_are_coalesced_into_one_origin_fetch(servers):
    base, origin, _ = servers

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.get(f"{base}/cached/coalesce?cc=max-age=60&delay=0.5") for _ in range(10)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert origin_stats(origin)["/cached/coalesce"] == 1
    assert sorted(xcache(r) for r in responses).count("Miss") == 1


def test_stale_entry_is_revalidated_with_its_etag(servers):
    base, origin, _ = servers
    path = "/cached/etag?cc=max-age=1&etag=v1"
    assert xcache(get(base, path)) == "Miss"
    import time

    time.sleep(1.3)
    refreshed = get(base, path)
    assert xcache(refreshed) == "RefreshHit" and refreshed.status_code == 200
    assert refreshed.json()["path"] == "/cached/etag"  # the stored body, served again
    stats = origin_stats(origin)
    assert stats["/cached/etag#304"] == 1


def test_response_generated_at_origin_request_is_cached(servers):
    base, origin, _ = servers
    first, second = get(base, "/cached-gen/x"), get(base, "/cached-gen/x")
    assert (xcache(first), xcache(second)) == ("Miss", "Hit")
    assert len(second.content) == 50_000
    assert "/cached-gen/x" not in origin_stats(origin)
    assert "origin-request" not in second.headers["server-timing"]
