"""`edgefn cache`: one cache whatever the launch path, and pruning what nothing runs any more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgefn.build.toolchain import cache_dir
from tests.conftest import REPO


def edgefn(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGEFN_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_prune_keeps_what_the_registry_runs_and_removes_the_rest(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "zig").symlink_to(cache_dir(), target_is_directory=True)  # zig's compiled libc: the suite's
    app = tmp_path / "app"
    edgefn("init", str(app), "--triggers", "viewer-request", cache=cache, cwd=REPO)
    assert edgefn("cache", "dir", cache=cache, cwd=app).stdout.strip() == str(cache)
    edgefn("deploy", cache=cache, cwd=app)
    source = app / "src" / "origin.c"
    source.write_text(source.read_text().replace("Hello from edgefn", "Hello again"))
    edgefn("deploy", cache=cache, cwd=app)  # $LATEST moves: the first origin is code nothing runs
    store = app / ".edgefn" / "modules"
    assert len(list((store / "wasm").glob("*.wasm"))) == 3
    records = list((cache / "builds").glob("*.json"))
    assert records  # a record per C build: what makes an unchanged source skip the compiler

    dry = edgefn("cache", "prune", "--dry-run", cache=cache, cwd=app).stdout
    assert "would remove 2 files the registry no longer runs" in dry and len(list((store / "wasm").glob("*.wasm"))) == 3

    out = edgefn("cache", "prune", cache=cache, cwd=app).stdout
    assert "removed 2 files the registry no longer runs" in out and "kept 2 deployed codes" in out, out
    assert "removed 0 built guests" in out and all(r.exists() for r in records)  # used just now: kept
    assert len(list((store / "wasm").glob("*.wasm"))) == 2
    invoked = edgefn("invoke", "origin:$LATEST", cache=cache, cwd=app)
    assert "Hello again" in invoked.stdout  # what the registry runs still runs, from the kept code

    old = edgefn("cache", "prune", "--older-than", "0", cache=cache, cwd=app).stdout
    assert f"removed {len(records)} built guests" in old and not any(r.exists() for r in records)
    info = edgefn("cache", "info", cache=cache, cwd=app).stdout
    assert f"module store {store}" in info and "artifacts" in info
