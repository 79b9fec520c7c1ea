"""The control-plane CLI as a user runs it (`python -m edgefn.cli` on a manifest in tmp_path), and a registry
that survives `kill -9` in the middle of `edgefn deploy`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefn.app_build import store_dir_of
from edgefn.cli import main
from edgefn.control.deploy import control_store_of, registry_path
from edgefn.control.store.registry import SqlRegistry
from edgefn.control.store.sqlite import SqliteDatabase
from edgefn.core.records import AliasRecord
from edgefn.manifest.load import load_manifest
from edgefn.runtime.invoker import Runtime
from edgefn.runtime.module_store import wasm_digest
from tests.conftest import REPO, wat_guest


def status_wasm(status: int) -> bytes:
    """A WAT guest answering {"status": status} (CBOR, 200 <= status <= 255)."""
    assert 200 <= status <= 255
    return wat_guest(extra=f'(data (i32.const 16) "\\a1\\66status\\18\\{status:02x}")')


def edgefn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def ok(*args: str) -> str:
    proc = edgefn(*args)
    assert proc.returncode == 0, f"edgefn {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def one_function_app(root: Path, status: int) -> Path:
    (root / "fn.wasm").write_bytes(status_wasm(status))
    manifest = root / "edgefn.toml"
    manifest.write_text('[functions.fn]\nsource = "fn.wasm"\n\n[default_behavior]\nfunction = "fn:live"\n')
    return manifest


def test_deploy_publish_alias_canary_rollback(tmp_path):
    manifest = one_function_app(tmp_path, 200)
    c = ("-c", str(manifest))
    v1_digest, v2_digest = wasm_digest(status_wasm(200)), wasm_digest(status_wasm(201))

    first = edgefn("deploy", *c)
    assert first.returncode == 0, first.stderr
    assert f"fn  $LATEST updated    {v1_digest[:12]}" in first.stdout
    assert "edgefn alias set fn:live VERSION" in first.stderr  # the manifest's alias does not exist yet: a note, not an error
    assert "published fn:1" in ok("publish", "fn", "--description", "first", *c)
    assert "fn:live: (new) -> 1" in ok("alias", "set", "fn:live", "1", *c)

    (tmp_path / "fn.wasm").write_bytes(status_wasm(201))  # new code
    assert f"fn  $LATEST updated    {v2_digest[:12]}" in ok("deploy", *c)
    assert "published fn:2" in ok("publish", "fn", *c)
    assert "fn:live: 1 -> 1 (90%) + 2 (10%)" in ok("alias", "set", "fn:live", "1", "--weight", "2=0.1", *c)
    assert "live   1 (90%) + 2 (10%)" in ok("alias", "list", "fn", *c)

    [row] = json.loads(ok("functions", "list", "--json", *c))
    assert row["name"] == "fn" and row["latest_digest"] == v2_digest and row["versions"] == [1, 2]
    assert row["aliases"] == {"live": {"1": 0.9, "2": 0.1}} and row["reserved_concurrency"] is None

    shown = json.loads(ok("functions", "show", "fn:live", "--json", *c))
    assert shown["kind"] == "alias" and shown["digest"] == v1_digest and shown["config"]["source"] == "fn.wasm"
    assert [h["routing"] for h in shown["history"]] == [{"1": 1.0}, {"1": 0.9, "2": 0.1}]
    assert [(v["version"], v["digest"], v["description"]) for v in shown["versions"]] == [(1, v1_digest, "first"), (2, v2_digest, "")]

    assert "fn:live: 1 (90%) + 2 (10%) -> 1 (rolled back)" in ok("rollback", "fn:live", *c)
    assert "fn:live: 1 -> 2 (rolled back)" in ok("rollback", "fn:live", "--to", "2", *c)

    ran = edgefn("invoke", "fn:live", *c)  # what the alias points at now, from the registry
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == 201 and "executed version: fn:2" in ran.stderr


BAD_INPUT = [
    (["publish", "ghost"], "function 'ghost' is not in the registry; deploy it first (edgefn deploy)"),
    (["alias", "set", "fn:live", "9"], "function 'fn' has no version 9"),
    (["alias", "set", "fn", "1"], "name the alias as NAME:ALIAS, e.g. fn:live"),
    (["alias", "set", "fn:7", "1"], "names version 7; an alias name is not all digits"),
    (["alias", "set", "fn:live", "1", "--weight", "2=1.5"], "must be between 0 and 1 (got 1.5)"),
    (["alias", "set", "fn:live", "1", "--weight", "half"], "use VERSION=WEIGHT with 0 < WEIGHT < 1"),
    (["alias", "set", "fn:live", "1", "--weight", "1=0.5"], "must differ from version 1"),
    (["alias", "delete", "fn:beta"], "function 'fn' has no alias 'beta'"),
    (["rollback", "fn:live"], "no earlier routing to roll back to"),
    (["rollback", "fn:live", "--to", "1"], "already routes every invocation to version 1"),
    (["functions", "show", "fn:9"], "function 'fn' has no version 9; publish one first"),
    (["functions", "show", "fn:beta"], "create it with: edgefn alias set fn:beta VERSION"),
    (["concurrency", "fn", "--reserved", "lots"], "use an integer from 0 to 100,000, or none"),
    (["concurrency", "fn:live", "--reserved", "3"], "reserved concurrency applies to a whole function"),
    (["concurrency", "fn", "--reserved", "950"], "leaves 50 of server.max_concurrency = 1000 unreserved; at least 100"),
    (["concurrency", "ghost", "--reserved", "3"], "function 'ghost' is not in the registry"),
    (["concurrency", "fn", "--provisioned", "2"], "applies to a published version or an alias"),
    (["concurrency", "fn:$LATEST", "--provisioned", "2"], "not $LATEST"),
]


@pytest.fixture
def published_app(tmp_path: Path) -> Path:
    """fn deployed and published as version 1, fn:live -> 1."""
    manifest = one_function_app(tmp_path, 200)
    assert main(["deploy", "-c", str(manifest)]) == 0
    assert main(["publish", "fn", "-c", str(manifest)]) == 0
    assert main(["alias", "set", "fn:live", "1", "-c", str(manifest)]) == 0
    return manifest


def test_text_output_and_concurrency(published_app, capsys):
    c = ["-c", str(published_app)]
    digest = wasm_digest(status_wasm(200))
    capsys.readouterr()
    assert main(["publish", "fn", *c]) == 0
    assert "fn: $LATEST is unchanged since version 1; no new version, fn:1 returned" in capsys.readouterr().out
    assert main(["concurrency", "fn", "--reserved", "5", *c]) == 0
    assert main(["concurrency", "fn:live", "--provisioned", "2", *c]) == 0
    assert capsys.readouterr().out == "fn: reserved concurrency 5\nfn:live: provisioned concurrency 2\n"

    assert main(["functions", "list", *c]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "$LATEST", "VERSIONS", "RESERVED", "ALIASES"]
    assert row.split() == ["fn", digest[:12], "1", "5", "live=1"]

    assert main(["functions", "show", "fn:live", *c]) == 0
    text = capsys.readouterr().out
    assert text.startswith("fn:live  (alias -> 1)\n")
    for line in (f"  code        {digest}", "  reserved    5", "  provisioned fn:live = 2", '    source = "fn.wasm"', "  aliases     live=1"):
        assert line in text.splitlines(), text

    assert main(["concurrency", "fn", "--reserved", "none", *c]) == 0
    assert main(["concurrency", "fn:live", "--provisioned", "0", *c]) == 0
    assert main(["alias", "delete", "fn:live", *c]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "deleted alias fn:live"
    assert main(["functions", "show", "fn", "--json", *c]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "$LATEST" and shown["reserved_concurrency"] is None
    assert shown["provisioned_concurrency"] == {} and shown["aliases"] == {}


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_what_to_fix(published_app, capsys, args, message):
    capsys.readouterr()
    before = control_store_of(published_app, load_manifest(published_app)).registry.revision()
    assert main([*args, "-c", str(published_app)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgefn: ") and message in err, err
    assert control_store_of(published_app, load_manifest(published_app)).registry.revision() == before  # nothing changed


def test_commands_on_a_missing_manifest_or_registry_entry(tmp_path, capsys):
    assert main(["functions", "list", "-c", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    proc = edgefn("invoke", "fn:beta", "-c", str(one_function_app(tmp_path, 200)))  # not deployed at all
    assert proc.returncode == 2 and "function 'fn' is not in the registry (run edgefn deploy)" in proc.stderr


# --- crash safety ---------------------------------------------------------------------------------------

#: enough functions that the deploy transaction stays open for tens of milliseconds: a kill can land inside it
CRASH_FUNCTIONS = 120
CRASH_RUNS = 10


def crash_app(root: Path, variant: int) -> tuple[Path, str]:
    """CRASH_FUNCTIONS functions all on the code of `variant`; returns the manifest and that code's digest."""
    wasm = status_wasm(200 + variant)
    (root / f"v{variant}.wasm").write_bytes(wasm)
    manifest = root / "edgefn.toml"
    manifest.write_text("".join(f'[functions.f{i:03}]\nsource = "v{variant}.wasm"\n\n' for i in range(CRASH_FUNCTIONS)))
    return manifest, wasm_digest(wasm)


def latest_state(db: Path) -> tuple[int, dict[str, tuple[str, str]], dict, dict]:
    """(revision, name -> ($LATEST digest, source), versions, aliases) read in one snapshot."""
    snap = SqlRegistry(SqliteDatabase(db)).snapshot()
    latest = {name: (fn.latest.digest, fn.latest.config["source"]) for name, fn in snap.functions.items()}
    return snap.revision, latest, snap.versions, snap.aliases


def registry_locked(conn: sqlite3.Connection) -> bool:
    """True while another process holds the registry's write lock (its deploy transaction is open)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return True
        raise
    conn.execute("ROLLBACK")
    return False


def kill_when_locked(proc: subprocess.Popen[str], db: Path) -> None:
    """Wait for the deploy to start writing (its progress line, then the write lock), then SIGKILL it."""
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "deploying N functions to ..." or EOF if it ended
    assert line == "" or line.startswith("deploying"), line
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if registry_locked(probe):
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.0005)  # short: the lock is held for tens of ms; not so busy that the deploy waits on us
    finally:
        probe.close()


def test_registry_survives_kill_9_during_deploy(tmp_path):
    manifest, digest = crash_app(tmp_path, 0)
    start = time.monotonic()
    ok("deploy", "-c", str(manifest))
    full_deploy_s = time.monotonic() - start
    db = registry_path(manifest, load_manifest(manifest))
    registry = SqlRegistry(SqliteDatabase(db))
    registry.publish("f000")
    registry.set_alias(AliasRecord("f000", "live", 1))
    _, _, versions, aliases = latest_state(db)
    assert set(versions) == {("f000", 1)} and set(aliases) == {("f000", "live")}

    outcomes: list[tuple[str, str]] = []
    with Runtime(store_dir_of(manifest, load_manifest(manifest))) as runtime:
        for run in range(CRASH_RUNS):
            revision, before, _, _ = latest_state(db)
            manifest, digest = crash_app(tmp_path, run + 1)
            target = {f"f{i:03}": (digest, f"v{run + 1}.wasm") for i in range(CRASH_FUNCTIONS)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgefn.cli", "deploy", "-c", str(manifest)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
            )
            if run % 2:  # inside the registry transaction
                mode = "in-transaction"
                kill_when_locked(proc, db)
            else:  # at increasing points of the whole command: start-up, build, precompile, deploy
                mode = "after-delay"
                time.sleep(full_deploy_s * (run + 1) / CRASH_RUNS)
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.stdout is not None
            proc.stdout.close()

            with sqlite3.connect(db) as check:
                assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            revision_after, after, versions_after, aliases_after = latest_state(db)
            assert after in (before, target), f"run {run} ({mode}): a mixed $LATEST state after kill -9"
            assert revision_after == revision + (after != before)
            assert (versions_after, aliases_after) == (versions, aliases), f"run {run}: versions or aliases changed"
            for name, (code, _) in after.items():
                assert runtime.store.wasm_path(code).exists(), f"run {run}: $LATEST of {name} names code not in the store"
            outcomes.append((mode, "old" if after == before else "new"))

    # a kill inside the open transaction left the old state: the rollback path really ran
    assert ("in-transaction", "old") in outcomes, outcomes
    # and the registry is still usable: a full deploy afterwards lands
    manifest, digest = crash_app(tmp_path, CRASH_RUNS + 1)
    ok("deploy", "-c", str(manifest))
    _, latest, versions_now, aliases_now = latest_state(db)
    assert set(latest.values()) == {(digest, f"v{CRASH_RUNS + 1}.wasm")}
    assert (versions_now, aliases_now) == (versions, aliases)
