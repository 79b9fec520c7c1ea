"""`serve` listens once what builds quickly is ready: a function still building (a first Python build takes
tens of seconds) is Pending, answered 503 with Retry-After, until it is built, precompiled and deployed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edgefn.build.toolchain import cache_dir
from tests.conftest import REPO
from tests.servers import edge_server

PY_HOOK = '''\
from edgefn_guest import Response


def viewer_response(response: Response):
    response.headers["x-python"] = "built"
    return response
'''


@pytest.fixture
def slow_app(tmp_path) -> tuple[Path, dict[str, str]]:
    """A C origin and a Python viewer-response hook, and a cache where that Python function was never built."""
    assert subprocess.run([sys.executable, "-m", "edgefn.cli", "init", str(tmp_path / "app")], cwd=REPO, capture_output=True).returncode == 0
    (tmp_path / "app" / "src" / "hook.py").write_text(PY_HOOK)
    manifest = tmp_path / "app" / "edgefn.toml"
    text = manifest.read_text()
    text = text.replace('viewer_response = { function = "viewer-response" }', 'viewer_response = { function = "py-hook" }')
    manifest.write_text(text + '\n[functions.py-hook]\nsource = "src/hook.py"\nmemory_mb = 64\nfuel = 200_000_000\n')
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "zig").symlink_to(cache_dir(), target_is_directory=True)  # C builds stay quick; Python's is the first
    return manifest, {"EDGEFN_CACHE_DIR": str(cache)}


def test_a_slow_function_is_pending_until_deployed_while_the_rest_serves(slow_app):
    manifest, env = slow_app
    with edge_server(manifest, tls=False, env=env, ready=False, startup_timeout=600) as server:
        health = httpx.get(f"{server.base}/_edgefn/health")
        assert health.status_code == 503  # a first componentize-py build takes far more than serve's 5 s
        assert health.json() == {"status": "starting", "building": ["py-hook"]} and health.headers["retry-after"] == "2"
        page = httpx.get(f"{server.base}/while-building")
        assert page.status_code == 503 and page.headers["x-edgefn-error"] == "function_pending" and page.headers["retry-after"] == "2"
        assert "still building py-hook" in server.log.read_text()
        deadline = time.monotonic() + 600
        while httpx.get(f"{server.base}/_edgefn/health").status_code != 200:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            assert server.proc.poll() is None, server.log.read_text()[-3000:]
            time.sleep(0.2)
        page = httpx.get(f"{server.base}/built")
        assert page.status_code == 200 and page.headers["x-python"] == "built" and "/built" in page.text
    assert "py-hook is built and deployed: all of app is served" in server.log.read_text()


def test_a_function_that_fails_to_build_late_stops_the_server_with_its_error(slow_app, tmp_path):
    manifest, env = slow_app
    (manifest.parent / "src" / "hook.py").write_text("import no_such_module_anywhere\n" + PY_HOOK)
    proc = subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "serve", "--config", str(manifest), "--port", "0", "--tls-port", "0", "--admin-port", "0"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "hook.py" in proc.stderr and "no_such_module_anywhere" in proc.stderr and "Traceback (most recent call last)" not in proc.stderr.split("build of")[0]
