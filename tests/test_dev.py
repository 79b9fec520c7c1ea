"""`edgefn dev` driven as a user would: edit sources and the manifest while it runs, over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from tests.servers import REPO, free_port


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def init_app(app: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "edgefn.cli", "init", str(app), *args], check=True, cwd=REPO, capture_output=True)


@contextlib.contextmanager
def dev_server(app: Path, log: Path, *extra: str, startup_timeout: float = 180) -> Iterator[tuple[str, subprocess.Popen]]:
    """`edgefn dev` on `app` in a subprocess (its terminal output in `log`); yields (base URL, process)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefn.cli", "dev", "--config", str(app / "edgefn.toml"), "--port", str(port), "--tls-port", "0", "--admin-port", "0", *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/_edgefn/health", timeout=1).status_code == 200, startup_timeout, "edgefn dev to start")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("devapp")
    app, record, log = root / "app", root / "recorded", root / "dev.log"
    init_app(app, "--triggers", "viewer-request,viewer-response")
    with dev_server(app, log, "--record", str(record)) as (base, proc):
        yield base, app, log, record, proc


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_edit_break_fix_and_manifest_change_without_restart(dev):
    base, app, log, record, proc = dev
    source = app / "src" / "viewer_response.c"
    assert httpx.get(f"{base}/").headers["x-viewer-response"] == "seen"

    # 1. an edit is served without a restart
    edit(source, '"seen"', '"edited"')
    wait_for(lambda: httpx.get(f"{base}/").headers.get("x-viewer-response") == "edited", what="the edited C function")
    wait_for(lambda: "reloaded viewer-response in" in log.read_text(), what="the reload line")

    # 2. a broken build: file:line in the terminal, an error page for browsers, the last good build for API clients
    edit(source, "return edgefn_finish(&res);", "return edgefn_finish(&res) this is not C;")
    wait_for(lambda: "viewer_response.c:" in log.read_text() and "error:" in log.read_text(), what="the compiler error in the log")
    page = httpx.get(f"{base}/", headers={"accept": "text/html"})
    assert page.status_code == 500 and "Build failed" in page.text and "viewer_response.c:" in page.text
    api = httpx.get(f"{base}/", headers={"accept": "application/json"})
    assert api.status_code == 200 and api.headers["x-viewer-response"] == "edited"

    # 3. the next good save recovers by itself
    edit(source, "return edgefn_finish(&res) this is not C;", "return edgefn_finish(&res);")
    edit(source, '"edited"', '"fixed"')
    wait_for(lambda: httpx.get(f"{base}/", headers={"accept": "text/html"}).headers.get("x-viewer-response") == "fixed", what="recovery")

    # 4. a manifest change is applied live; an invalid one keeps the last good app and says what is wrong
    manifest = app / "edgefn.toml"
    manifest.write_text(manifest.read_text() + '\n[[behaviors]]\npath_pattern = "/plain/*"\nfunction = "origin"\n')
    wait_for(lambda: "x-viewer-response" not in httpx.get(f"{base}/plain/x").headers, what="the new behavior")
    good = manifest.read_text()
    manifest.write_text(good.replace('path_pattern = "/plain/*"', 'path_patern = "/plain/*"'))
    wait_for(lambda: "behaviors[0].path_patern: unknown key" in log.read_text(), what="the manifest error")
    assert "x-viewer-response" not in httpx.get(f"{base}/plain/y").headers  # still the last good manifest
    manifest.write_text(good)
    assert proc.poll() is None  # never restarted


def test_terminal_shows_a_request_log_line(dev):
    base, _, log, _, _ = dev
    httpx.get(f"{base}/logged-path")
    wait_for(lambda: "GET    /logged-path 200" in log.read_text(), what="the request log line")
    line = next(entry for entry in log.read_text().splitlines() if "/logged-path 200" in entry)
    assert "fuel=" in line and "viewer-response=" in line and "\033[" not in line  # plain when not a TTY
    text = log.read_text()
    assert "edgefn dev app: 3 functions (origin, viewer-request, viewer-response), 1 behavior; watching" in text  # the start-up summary
    assert "REPORT RequestId" not in text and "edgefn.access" not in text  # one line per request: those are in `edgefn logs`


def test_recorded_events_replay_with_invoke(dev):
    base, app, _, record, _ = dev
    httpx.get(f"{base}/replay-me?x=1")
    wait_for(lambda: any("replay" in p.read_text() for p in record.glob("viewer-request/*.json")), what="a recorded event")
    event = next(p for p in record.glob("viewer-request/*.json") if "/replay-me" in p.read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "invoke", "viewer-request", "--config", str(app / "edgefn.toml"), "--event", str(event)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"uri": "/replay-me"' in proc.stdout and "REPORT RequestId:" in proc.stderr


def test_python_function_hot_reload(tmp_path):
    """`edgefn init --lang python` then `edgefn dev`: a Python function runs from its sources on the one Python
    runtime component, so a save is an import, not a CPython bundle; import errors are build errors with
    file:line:column; a standard module the runtime lacks gets the production build."""
    app = tmp_path / "pyapp"
    init_app(app, "--lang", "python", "--triggers", "viewer-response")
    log = tmp_path / "dev.log"
    source = app / "src" / "viewer_response.py"
    with dev_server(app, log, startup_timeout=900) as (base, proc):
        first = httpx.get(f"{base}/hello")
        assert first.status_code == 200 and "/hello" in first.text and first.headers["x-viewer-response"] == "seen"
        info = httpx.get(f"{base}/_edgefn/info").json()
        store = app / ".edgefn" / "modules"
        bundle = (store / "wasm" / f"{info['functions']['viewer-response']['digest']}.wasm").read_bytes()
        assert bundle.startswith(b"EDGEFNSRC1\n")  # a source bundle, not a component of its own

        # 1. a save is served without a rebuild of CPython; the sources it runs from are its only files, read-only
        probe = (
            "def _try(what, act):\n    try:\n        act()\n        return what + ' allowed'\n    except OSError:\n        return what + ' refused'\n\n\n"
            "REACH = ', '.join([_try('write', lambda: open('/app/planted.py', 'w')), _try('read', lambda: open('/etc/hostname').read())])\n"
        )
        edit(source, "from edgefn_guest import Response\n", "from edgefn_guest import Response\n\n" + probe)
        edit(source, 'response.headers["x-viewer-response"] = "seen"', 'response.headers["x-viewer-response"] = "edited in python"\n    response.headers["x-reach"] = REACH')
        wait_for(lambda: httpx.get(f"{base}/").headers.get("x-viewer-response") == "edited in python", 120, "the edited Python function")
        wait_for(lambda: "reloaded viewer-response in" in log.read_text(), what="the reload line")
        assert httpx.get(f"{base}/").headers["x-reach"] == "write refused, read refused"
        edit(source, "\n" + probe, "")
        edit(source, '\n    response.headers["x-reach"] = REACH', "")
        wait_for(lambda: "x-reach" not in httpx.get(f"{base}/").headers, 120, "the probe removed")

        # 2. a syntax error: the user's file, line and column, an error page that reloads itself, the last good code for API clients
        edit(source, "def viewer_response(response: Response):", "def viewer_response(response: Response)")
        wait_for(lambda: "SyntaxError" in log.read_text(), 120, "the syntax error")
        text = log.read_text()
        assert f"{source}:6:" in text and "error: SyntaxError: expected ':'" in text, text[-3000:]
        page = httpx.get(f"{base}/", headers={"accept": "text/html"})
        assert page.status_code == 500 and f"{source}:6:" in page.text and "/_edgefn/dev/builds" in page.text
        assert httpx.get(f"{base}/_edgefn/dev/builds").json() == {"broken": ["viewer-response"]}
        assert httpx.get(f"{base}/").headers["x-viewer-response"] == "edited in python"
        edit(source, "def viewer_response(response: Response)", "def viewer_response(response: Response):")
        wait_for(lambda: httpx.get(f"{base}/_edgefn/dev/builds").json() == {"broken": []}, 120, "the fixed build")

        # 3. an exception while importing: where it was raised
        edit(source, "from edgefn_guest import Response\n", "from edgefn_guest import Response\n\nLIMIT = undefined_name + 1\n")
        wait_for(lambda: "NameError" in log.read_text(), 120, "the import error")
        assert f"{source}:5:9: error: NameError: name 'undefined_name' is not defined" in log.read_text()
        edit(source, "\nLIMIT = undefined_name + 1\n", "")

        # 4. a standard module the dev runtime does not hold: the production build, still served
        edit(source, "from edgefn_guest import Response\n", "import difflib\nfrom edgefn_guest import Response\n")
        edit(source, '"edited in python"', 'difflib.__name__')
        wait_for(lambda: httpx.get(f"{base}/").headers.get("x-viewer-response") == "difflib", 900, "the fully built function")
        assert "imports difflib, which the dev runtime does not hold" in log.read_text()
        assert proc.poll() is None


@pytest.mark.parametrize("lang", ["ts", "zig"])
def test_typescript_and_zig_hot_reload(tmp_path, lang):
    """`edgefn init --lang ts|zig` then `edgefn dev`: a save is served without a restart, a compile error names
    the file and line (the last good code keeps serving), and fixing it serves the fix."""
    app = tmp_path / f"{lang}app"
    init_app(app, "--lang", lang, "--triggers", "viewer-response")
    log = tmp_path / "dev.log"
    source = app / "src" / f"viewer_response.{lang}"
    with dev_server(app, log) as (base, proc):
        assert httpx.get(f"{base}/hello").headers["x-viewer-response"] == "seen"
        edit(source, '"seen"', '"edited"')
        wait_for(lambda: httpx.get(f"{base}/").headers.get("x-viewer-response") == "edited", 120, f"the edited {lang} function")
        broken_line = 5 if lang == "ts" else 6
        edit(source, '"edited"', '"edited" +')
        wait_for(lambda: httpx.get(f"{base}/_edgefn/dev/builds").json() == {"broken": ["viewer-response"]}, 120, "the broken build")
        assert f"{source}:{broken_line}:" in log.read_text(), log.read_text()[-3000:]
        assert httpx.get(f"{base}/").headers["x-viewer-response"] == "edited"
        edit(source, '"edited" +', '"fixed"')
        wait_for(lambda: httpx.get(f"{base}/").headers.get("x-viewer-response") == "fixed", 120, "the fixed build")
        assert proc.poll() is None
