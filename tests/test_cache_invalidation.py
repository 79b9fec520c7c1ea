"""A deploy drops the cached responses its functions made, in every worker process, and nothing else
(real `edgefn serve --workers 2`, real `edgefn deploy`, real HTTP)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.conftest import run_edgefn as edgefn
from tests.servers import edge_server

MANIFEST = """
[app]
name = "invalidation"

[functions.hello]
source = "{hello}"
env = {{ GREETING = "{greeting}" }}

[functions.page]
source = "{page}"

[functions.shaper]
source = "{shaper}"
memory_mb = {shaper_mb}

[[behaviors]]
path_pattern = "/greeting/*"
function = "hello"
cache = {{ default_ttl = 3600, max_ttl = 3600 }}

[[behaviors]]
path_pattern = "/page/*"
function = "page"
cache = {{ default_ttl = 3600, max_ttl = 3600 }}

[[behaviors]]
path_pattern = "/shaped/*"
function = "page"
origin_response = {{ function = "shaper" }}
cache = {{ default_ttl = 3600, max_ttl = 3600 }}

[default_behavior]
function = "page"
"""


def _write(config: Path, greeting: str, shaper_mb: int = 16) -> None:
    config.write_text(MANIFEST.format(
        hello=REPO / "examples/hello/src/hello.c", page=REPO / "examples/security-headers/src/page.c",
        shaper=REPO / "examples/security-headers/src/security-headers.c", greeting=greeting, shaper_mb=shaper_mb,
    ))


def _wait_for_both_workers(log: Path, line: str) -> None:
    """Until each of the two worker processes has logged `line` once (a deploy applied: within its poll interval)."""
    deadline = time.monotonic() + 60
    while log.read_text().count(line) < 2:
        assert time.monotonic() < deadline, f"{line!r} not logged by both workers:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_a_deploy_drops_what_the_changed_function_made_in_every_worker(tmp_path: Path) -> None:
    config = tmp_path / "edgefn.toml"
    _write(config, "Hello")
    with edge_server(config, "--workers", "2", tls=False) as server, httpx.Client(base_url=server.base, timeout=10) as client:
        def fill() -> None:  # until both workers have both responses cached (each process has its own cache)
            deadline = time.monotonic() + 60
            hits = 0
            while hits < 12:
                assert time.monotonic() < deadline, "the responses were never cached"
                statuses = [client.get(p, headers={"connection": "close"}).headers["x-cache"] for p in ("/greeting/x", "/page/x", "/shaped/x")]
                hits = hits + 1 if all(s.startswith("Hit") for s in statuses) else 0

        # health answers once one worker listens: on a busy machine the other may start seconds later, and a worker
        # that was not listening while the cache was filled has nothing to drop
        _wait_for_both_workers(server.log, "listens on")
        fill()
        assert client.get("/greeting/x").text.startswith("Hello")
        _write(config, "Howdy")
        deploy = edgefn("deploy", "--config", str(config))
        assert deploy.returncode == 0, deploy.stderr
        _wait_for_both_workers(server.log, "responses made by hello dropped")
        # every worker dropped hello's old response: new connections, spread over both processes, never see it again
        for _ in range(20):
            r = client.get("/greeting/x", headers={"connection": "close"})
            assert r.text.startswith("Howdy"), r.headers
            page = client.get("/page/x", headers={"connection": "close"})
            assert page.headers["x-cache"].startswith("Hit"), ("an unchanged function's responses stay cached", server.log.read_text()[-3000:])
            assert client.get("/shaped/x", headers={"connection": "close"}).headers["x-cache"].startswith("Hit")
        # a new configuration of the origin-response hook drops what it shaped (and only that)
        _write(config, "Howdy", shaper_mb=32)
        assert edgefn("deploy", "--config", str(config)).returncode == 0
        _wait_for_both_workers(server.log, "responses made by shaper dropped")
        assert client.get("/shaped/x", headers={"connection": "close"}).headers["x-cache"].startswith("Miss")
        assert client.get("/page/x", headers={"connection": "close"}).headers["x-cache"].startswith("Hit")
    assert "responses made by hello dropped" in server.log.read_text()
