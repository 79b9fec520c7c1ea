"""Secrets: put from stdin or a file (never argv), read by a guest through its env API, sealed at rest, captured by
reference in published versions, rotated into a running server, and never shown: a planted value is looked for in
every output surface (CLI, admin API, viewer answers and error pages, Tail output, every log line, every file the
app's state holds)."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import GUESTS_C
from tests.conftest import run_edgefn as edgefn
from tests.servers import edge_server

TOKEN = "secrets-test-token"
PLANTED = "planted-S3CRET-7f1c2e9a"
ROTATED = "rotated-S3CRET-0b44d5e1"
F = "/2015-03-31/functions"


def _put(config: Path, value: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return edgefn("secret", "put", "keeper", "API_KEY", "--config", str(config), *extra, input=value + "\n", env=env, timeout=120)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secrets")
    shutil.copy(GUESTS_C / "secret_user.c", tmp / "secret_user.c")
    config = tmp / "edgefn.toml"
    config.write_text('[app]\nname = "secrets"\n\n[functions.keeper]\nsource = "secret_user.c"\nmemory_mb = 16\nenv = { PLAIN = "visible" }\n\n'
                      '[default_behavior]\nfunction = "keeper"\n')
    put = _put(config, PLANTED)
    assert put.returncode == 0 and PLANTED not in put.stdout + put.stderr, put.stderr
    with edge_server(config, "--workers", "2", tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        yield server, config


def _get(server, path: str, token: str | None = None) -> httpx.Response:
    headers = {"connection": "close"} | ({"authorization": f"Bearer {token}"} if token else {})
    return httpx.get(f"{server.base}{path}", headers=headers, timeout=30)


def _admin(server) -> httpx.Client:
    return httpx.Client(base_url=server.admin, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_the_guest_reads_it_through_env(app):
    server, _ = app
    assert _get(server, "/check", PLANTED).text == "welcome"
    assert _get(server, "/check", "guess").status_code == 401


def test_the_key_file_is_owner_only_and_nothing_is_stored_in_plain_text(app):
    _, config = app
    key = config.parent / ".edgefn" / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    for f in (config.parent / ".edgefn").glob("control.db*"):
        assert PLANTED.encode() not in f.read_bytes(), f


def test_never_shown_anywhere(app):
    server, config = app
    surfaces: dict[str, str] = {}
    surfaces["leak page"] = _get(server, "/leak").text
    failed = _get(server, "/fail")
    assert failed.status_code >= 500 and failed.headers["x-edgefn-error"] == "function_error"
    surfaces["error page"] = failed.text + str(failed.headers)
    with _admin(server) as admin:
        surfaces["GetFunction"] = admin.get(f"{F}/keeper").text
        surfaces["GetFunctionConfiguration"] = admin.get(f"{F}/keeper/configuration").text
        for path in ("/leak", "/fail"):
            r = admin.post(f"{F}/keeper/invocations", json={"request": {"uri": path}}, headers={"X-Amz-Log-Type": "Tail"})
            tail = base64.b64decode(r.headers["x-amz-log-result"]).decode()
            assert "***" in tail, tail  # the guest's line is there, its secret masked
            surfaces[f"invoke {path}"] = r.text + tail
    for args in (("functions", "show", "keeper"), ("functions", "show", "keeper", "--json"), ("secret", "list", "keeper"), ("functions", "list")):
        proc = edgefn(*args, "--config", str(config))
        assert proc.returncode == 0, proc.stderr
        surfaces[" ".join(args)] = proc.stdout + proc.stderr
    assert "API_KEY" in surfaces["secret list keeper"]
    assert "visible" in surfaces["functions show keeper"]  # env is shown; the secret is not
    assert "secrets     API_KEY (generation 1)" in surfaces["functions show keeper"]  # its name and generation are
    # every log line of both workers and of the server itself, and every file of the app's state
    deadline = time.monotonic() + 30
    logs = config.parent / ".edgefn" / "logs"
    while not any("***" in f.read_text() for f in logs.rglob("*.log")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    surfaces["server output"] = server.log.read_text()
    for f in (config.parent / ".edgefn").rglob("*"):
        if f.is_file():
            surfaces[str(f)] = f.read_bytes().decode("latin-1")
    shown = [name for name, text in surfaces.items() if PLANTED in text]
    assert not shown, f"the secret was shown by: {shown}"
    assert any("debugging: the key is ***" in text for text in surfaces.values())
    assert "could not use key ***" in surfaces["invoke /fail"]


def test_versions_capture_a_reference_and_rotation_reaches_latest(app):
    server, config = app
    published = edgefn("publish", "keeper", "--config", str(config))
    assert published.returncode == 0, published.stderr
    kept = _put(config, ROTATED, "--if-missing")
    assert kept.returncode == 0 and "already set: kept" in kept.stdout  # a seed never overwrites
    put = _put(config, ROTATED)
    assert put.returncode == 0 and "generation 2" in put.stdout
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 6:  # both workers, within about a second
        assert time.monotonic() < deadline, "rotation never reached the server"
        streak = streak + 1 if _get(server, "/check", ROTATED).status_code == 200 else 0
    assert _get(server, "/check", PLANTED).status_code == 401
    with _admin(server) as admin:
        version = admin.get(f"{F}/keeper/versions").json()["Versions"][-1]["Version"]
        old = admin.post(f"{F}/keeper/invocations", params={"Qualifier": version}, json={"request": {"uri": "/check", "headers": {"authorization": [{"key": "Authorization", "value": f"Bearer {PLANTED}"}]}}})
        assert old.json()["status"] == 200, old.text  # the version reads the generation it was published with
    deleted = edgefn("secret", "delete", "keeper", "API_KEY", "--config", str(config))
    assert deleted.returncode == 0, deleted.stderr
    streak = 0
    while streak < 6:  # both workers applied the delete
        assert time.monotonic() < deadline + 30, "the delete never reached the server"
        streak = streak + 1 if _get(server, "/check", ROTATED).text == "no key configured" else 0
    assert "API_KEY" not in edgefn("secret", "list", "keeper", "--config", str(config)).stdout


def test_mistakes_are_one_line(app, tmp_path):
    _, config = app
    for args, value, said in [
        (("secret", "put", "nobody", "K"), "v", "no function 'nobody'"),
        (("secret", "put", "keeper", "1BAD"), "v", "is not a secret name"),
        (("secret", "put", "keeper", "EMPTY"), "", "the value is empty"),
        (("secret", "delete", "keeper", "NEVER_SET"), "", "has no secret NEVER_SET"),
    ]:
        proc = edgefn(*args, "--config", str(config), input=value, timeout=60)
        assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert edgefn("secret", "put", "keeper", "API_KEY", "extra-argv-value", "--config", str(config)).returncode == 2  # never from argv
    wrong = _put(config, "x", env={"EDGEFN_SECRETS_KEY": "bm90IGEga2V5"})
    assert wrong.returncode == 2 and "is not a key: give 32 bytes in base64" in wrong.stderr


def test_a_key_that_does_not_open_them_is_named(tmp_path):
    shutil.copy(GUESTS_C / "secret_user.c", tmp_path / "secret_user.c")
    config = tmp_path / "edgefn.toml"
    config.write_text('[functions.keeper]\nsource = "secret_user.c"\nmemory_mb = 16\n')
    assert _put(config, PLANTED).returncode == 0
    assert edgefn("deploy", "--config", str(config)).returncode == 0
    other = base64.b64encode(b"k" * 32).decode()
    proc = edgefn("invoke", "keeper", "--config", str(config), env={"EDGEFN_SECRETS_KEY": other})
    assert proc.returncode == 2 and "does not open with the key from $EDGEFN_SECRETS_KEY" in proc.stderr and PLANTED not in proc.stderr
    ok = edgefn("invoke", "keeper", "--config", str(config))
    assert ok.returncode == 0 and "wrong key" in ok.stdout, ok.stdout  # the guest read its key ("no key configured" without it)
