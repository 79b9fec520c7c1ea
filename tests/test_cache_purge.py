"""`edgefn cache purge PATH | --prefix | --tag | --all` against a running `edgefn serve --workers 2`: each worker
drops exactly what the purge names (counted at a real origin), surrogate keys come from Cache-Tag and
Surrogate-Key and never reach a viewer, and a user's mistake gets one line."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_edgefn as edgefn
from tests.origin_app import origin_server, origin_stats
from tests.servers import edge_server, free_port

TOKEN = "purge-test-token"
PATHS = {"/a/1": "tag=t1", "/a/2": "tag=t2", "/b/1": "skey=t1%20t3"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("purge")
    port = free_port()
    config = tmp / "edgefn.toml"
    config.write_text(
        f'[app]\nname = "purge"\n\n[default_behavior]\norigin = "http://127.0.0.1:{port}"\n'
        'cache = { default_ttl = 3600, max_ttl = 3600, query_strings = ["tag", "skey"] }\n'
    )
    with origin_server(port) as origin, edge_server(config, "--workers", "2", tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        yield server, origin, config


def _get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base}{path}?{PATHS[path]}", headers={"connection": "close"}, timeout=10)  # a new connection: either worker


def _fill(server) -> None:
    """Until both workers hold every path (8 rounds in a row all hits: a worker missed has odds of 2**-24)."""
    deadline, streak = time.monotonic() + 60, 0
    while streak < 8:
        assert time.monotonic() < deadline, "never all cached"
        streak = streak + 1 if all(_get(server, p).headers["x-cache"].startswith("Hit") for p in PATHS) else 0


def _purge(server, config: Path, *args: str, api: dict[str, object] | None = None) -> None:
    """One purge, by the CLI or (`api`) the admin API, applied by both workers."""
    before = server.log.read_text().count("cache purge ")
    if api is None:
        proc = edgefn("cache", "purge", *args, "--config", str(config))
        assert proc.returncode == 0 and "logged" in proc.stdout, proc.stderr
    else:
        r = httpx.post(f"{server.admin}/2026-12-01/cache/purges", json=api, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 201 and r.json()["Kind"] == next(iter(api)).lower(), r.text
    deadline = time.monotonic() + 30
    while server.log.read_text().count("cache purge ") < before + 2:  # both workers applied it
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.05)


def _refetched(server, origin: str) -> dict[str, int]:
    """How many origin fetches each path needs now until both workers hold it again."""
    before = origin_stats(origin)
    _fill(server)
    after = origin_stats(origin)
    return {p: after.get(p, 0) - before.get(p, 0) for p in PATHS}


@pytest.mark.parametrize(
    ("args", "dropped"),
    [
        (["/a/1"], {"/a/1"}),
        (["--tag", "t1"], {"/a/1", "/b/1"}),  # Cache-Tag on /a/1, Surrogate-Key "t1 t3" on /b/1
        (["--tag", "t3"], {"/b/1"}),
        (["--prefix", "/a/"], {"/a/1", "/a/2"}),
        (["/a/*"], {"/a/1", "/a/2"}),
        (["--all"], set(PATHS)),
    ],
)
def test_a_purge_drops_what_it_names_in_every_worker(env, args, dropped):
    server, origin, config = env
    _fill(server)
    _purge(server, config, *args)
    fetched = _refetched(server, origin)
    for path in PATHS:
        if path in dropped:
            assert 1 <= fetched[path] <= 2, (args, fetched)  # once per worker that held it
        else:
            assert fetched[path] == 0, (args, fetched)


def test_the_admin_api_purges_too(env):
    server, origin, config = env
    _fill(server)
    _purge(server, config, api={"Tag": "t2"})
    fetched = _refetched(server, origin)
    assert 1 <= fetched["/a/2"] <= 2 and fetched["/a/1"] == fetched["/b/1"] == 0, fetched
    bad = httpx.post(f"{server.admin}/2026-12-01/cache/purges", json={"Path": "/x", "Tag": "y"}, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert bad.status_code == 400 and "exactly one of" in bad.text
    assert httpx.post(f"{server.admin}/2026-12-01/cache/purges", json={"All": True}, timeout=10).status_code == 401  # the token is required


def test_surrogate_keys_do_not_reach_viewers(env):
    server, _, _ = env
    for path in PATHS:
        r = _get(server, path)
        assert "cache-tag" not in r.headers and "surrogate-key" not in r.headers, r.headers


@pytest.mark.parametrize(("args", "says"), [(["index.html"], "is not a path"), (["--tag", " "], "the tag is empty")])
def test_a_bad_purge_gets_one_line(env, args, says):
    _, _, config = env
    proc = edgefn("cache", "purge", *args, "--config", str(config))
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
