"""`[server] http1 = "uvicorn"`: the cleartext port on uvicorn + httptools, TLS still on Hypercorn, the same app.

Real `edgefn serve` processes on 127.0.0.1, real C guests, real HTTP clients (HTTP/1.1 cleartext, HTTP/2
over TLS).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import REPO, edge_server

GUESTS = REPO / "tests" / "guests" / "c"

MANIFEST = f"""
[app]
name = "uvicorn-listener"

[server]
http1 = "uvicorn"

[functions.hello]
source = "{REPO / 'examples' / 'hello' / 'src' / 'hello.c'}"
env = {{ GREETING = "Howdy" }}

[functions.spin]
source = "{GUESTS / 'infinite_loop.c'}"
fuel = 20_000_000

[[behaviors]]
path_pattern = "/spin/*"
function = "spin"

[default_behavior]
function = "hello"
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("uvicorn") / "edgefn.toml"
    config.write_text(MANIFEST)
    return config


def test_the_cleartext_port_is_served_by_uvicorn_with_the_same_pipeline(app: Path) -> None:
    with edge_server(app) as server:
        r = httpx.get(f"{server.base}/hi")
        assert r.status_code == 200 and r.text == "Howdy from edgefn!"
        assert r.headers["x-edgefn-executed-version"] == "hello:$LATEST" and r.headers["x-cache"] == "Miss from edgefn"
        rid = r.headers["x-edgefn-request-id"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rid)
        assert "hypercorn" not in r.headers.get("server", "")
        # a hostile guest: the precise status, and the listener keeps serving
        spun = httpx.get(f"{server.base}/spin/x")
        assert spun.status_code == 503 and spun.headers["x-edgefn-error"] == "cpu_budget_exhausted"
        assert httpx.get(f"{server.base}/again").status_code == 200
        # the reserved prefix and the path rules are the app's, whatever serves the port
        assert httpx.get(f"{server.base}/_edgefn/health").json() == {"status": "ok"}
        assert httpx.get(f"{server.base}/a/%2e%2e/_edgefn/info").status_code == 404
        assert httpx.get(f"{server.base}/a%2Fb").status_code == 400
        text = server.log.read_text()
        assert f"REPORT RequestId: {rid}" in text and f'"request_id": "{rid}"' in text
        assert "(HTTP/1.1 on uvicorn + httptools)" in text
        # TLS stays on Hypercorn: HTTP/2 there
        assert server.https is not None
        with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(server.cafile))) as client:
            tls = client.get(f"{server.https}/tls")
        assert tls.status_code == 200 and tls.http_version == "HTTP/2" and tls.text == "Howdy from edgefn!"


def test_two_workers_each_listen_and_share_the_connections(app: Path) -> None:
    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base, limits=httpx.Limits(max_connections=16)) as client:
            return await asyncio.gather(*(client.get(f"/n{i}") for i in range(64)))

    with edge_server(app, "--workers", "2", tls=False) as server:
        # each worker process joins the port's group once its node is up (the health check saw the first one)
        deadline = time.monotonic() + 60
        while server.log.read_text().count("HTTP/1.1 on uvicorn + httptools: http://") < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.05)
        responses = asyncio.run(many())
        assert all(r.status_code == 200 and r.text == "Howdy from edgefn!" for r in responses)
        assert server.log.read_text().count("HTTP/1.1 on uvicorn + httptools: http://") == 2
