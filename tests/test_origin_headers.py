"""What crosses the edge to an origin and back (CloudFront's rules, docs/pipeline.md), against a real origin:
X-Forwarded-For and X-Forwarded-Proto set by the edge, Via appended, Expect and hop-by-hop headers stripped both
ways, and one Date and one Server on every response (an origin's own passed through, not doubled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.origin_app import origin_server
from tests.servers import edge_server, free_port
from tests.test_security import raw_request, status_of

REPO = Path(__file__).resolve().parents[1]
HELLO_C = REPO / "examples" / "hello" / "src" / "hello.c"


def _manifest(tmp: Path, origin_port: int, trust: bool) -> Path:
    config = tmp / ("trusting.toml" if trust else "edgefn.toml")
    config.write_text(
        f'[app]\nname = "headers"\n\n[server]\ntrust_forwarded_for = {str(trust).lower()}\n\n'
        f'[functions.hello]\nsource = "{HELLO_C}"\nenv = {{ GREETING = "Hello" }}\n\n'
        f'[[behaviors]]\npath_pattern = "/generated/*"\nfunction = "hello"\n\n'
        f'[default_behavior]\norigin = "http://127.0.0.1:{origin_port}"\n'
    )
    return config


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("origin-headers")
    port = free_port()
    with origin_server(port), edge_server(_manifest(tmp, port, trust=False)) as server, edge_server(_manifest(tmp, port, trust=True), tls=False) as trusting:
        yield server, trusting


def _seen(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return response.json()["headers"]


def _on_uvicorn(tmp: Path) -> tuple[int, Path]:
    """A fresh origin port and the same (untrusting) app with its cleartext port on uvicorn."""
    origin_port = free_port()
    config = _manifest(tmp, origin_port, trust=False)
    config.write_text(config.read_text().replace("[server]\n", '[server]\nhttp1 = "uvicorn"\n'))
    return origin_port, config


@pytest.mark.parametrize("listener", ["hypercorn", "uvicorn"])
def test_the_origin_gets_the_peer_address_not_the_viewers_claim(env, listener, tmp_path):
    def check(base: str) -> None:
        # a viewer on loopback claims another address and https: neither listener believes it
        seen = _seen(httpx.get(f"{base}/xff", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}))
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["via"] == "1.1 edgefn"

    if listener == "uvicorn":
        origin_port, config = _on_uvicorn(tmp_path)
        with origin_server(origin_port), edge_server(config, tls=False) as uv:
            check(uv.base)
        return
    check(env[0].base)


def test_behind_a_trusted_proxy_the_peer_is_appended(env):
    _, trusting = env
    seen = _seen(httpx.get(f"{trusting.base}/xff", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.2", "Via": "1.1 lb.example"}))
    assert seen["x-forwarded-for"] == "203.0.113.9, 10.0.0.2, 127.0.0.1"
    assert seen["via"] == "1.1 lb.example, 1.1 edgefn"


def test_https_viewers_are_forwarded_as_https(env):
    server, _ = env
    with httpx.Client(verify=False) as client:
        assert _seen(client.get(f"{server.https}/proto"))["x-forwarded-proto"] == "https"


def test_expect_and_hop_by_hop_request_headers_stay_at_the_edge(env):
    server, _ = env
    body = b'{"a": 1}'
    raw = raw_request(
        server.port,
        b"POST /hop HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Private\r\nX-Private: viewer-only\r\nKeep-Alive: 300\r\n"
        b"Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    final = raw[raw.rindex(b"HTTP/1.1 ") :]  # after a 100 Continue, if the listener sent one
    assert status_of(final) == 200, raw[:500]
    payload = final.split(b"\r\n\r\n", 1)[1]  # relayed chunked: the one JSON document is inside the chunk
    seen = json.loads(payload[payload.index(b"{") : payload.rindex(b"}") + 1])
    assert seen["body"] == body.decode()
    for name in ("expect", "x-private", "keep-alive"):
        assert name not in seen["headers"], (name, seen["headers"])
    assert "x-private" not in seen["headers"].get("connection", "").lower()  # the edge's own connection header only
    # and nothing the viewer did not send: no client library's Accept-Encoding (the origin could gzip for a viewer that can't read it)
    assert "accept-encoding" not in seen["headers"] and "user-agent" not in seen["headers"], seen["headers"]
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"


def test_hop_by_hop_response_headers_stay_at_the_edge(env):
    server, _ = env
    r = httpx.get(f"{server.base}/hop-response?hop=1")
    assert r.status_code == 200
    assert "x-hop-secret" not in r.headers and "keep-alive" not in r.headers


def _count(raw: bytes, name: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"(?im)^" + name + rb":\s*(.*?)\r?$", head)


@pytest.mark.parametrize("listener", ["hypercorn", "uvicorn"])
def test_one_date_and_one_server_on_proxied_and_generated_responses(env, listener, tmp_path):
    server, _ = env
    port = server.port
    if listener == "uvicorn":
        origin_port, config = _on_uvicorn(tmp_path)
        with origin_server(origin_port), edge_server(config, tls=False) as uv:
            _check_date_and_server(uv.port)
        return
    _check_date_and_server(port)


def _check_date_and_server(port: int) -> None:
    proxied = raw_request(port, b"GET /dated HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert status_of(proxied) == 200
    assert len(_count(proxied, b"date")) == 1 and _count(proxied, b"server") == [b"hypercorn-h11"], proxied[:600]  # the origin's own
    generated = raw_request(port, b"GET /generated/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert status_of(generated) == 200 and b"Hello" in generated
    assert len(_count(generated, b"date")) == 1 and _count(generated, b"server") == [b"edgefn"], generated[:600]
    reserved = raw_request(port, b"GET /_edgefn/health HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
    assert len(_count(reserved, b"date")) == 1 and _count(reserved, b"server") == [b"edgefn"], reserved[:600]
