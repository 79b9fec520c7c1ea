"""A user's common mistakes at the CLI: each gets a one-line `edgefn: ...` error and an exit status, never a
Python traceback, and is found before anything is built (real `edgefn` subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.conftest import run_edgefn as edgefn

EXAMPLES = REPO / "examples"


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert "building" not in proc.stderr, "the mistake must be found before any build"
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A copy of examples/hello, so its registry and stores are this test's own."""
    shutil.copytree(EXAMPLES / "hello", tmp_path / "hello", ignore=shutil.ignore_patterns(".edgefn", "build"))
    return tmp_path / "hello" / "edgefn.toml"


def test_a_mistyped_command_gets_a_suggestion():
    assert_user_error(edgefn("sever"), "unknown command 'sever'; did you mean 'serve'?")
    assert_user_error(edgefn("alias", "sett"), "did you mean 'set'?")
    assert_user_error(edgefn("init", "x", "--lang", "pyton"), "--lang: unknown choice 'pyton'; did you mean 'python'?")


def test_version():
    proc = edgefn("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgefn ")


#: the arguments each command that reads a manifest needs besides --config (every such command is here: a test checks)
WITH_CONFIG = {
    "serve": [], "dev": [], "build": [], "invoke": ["hello"], "deploy": [], "publish": ["hello"], "alias set": ["hello:live", "1"],
    "alias list": ["hello"], "alias delete": ["hello:live"], "rollback": ["hello:live"], "functions list": [], "functions show": ["hello"],
    "concurrency": ["hello", "--reserved", "1"], "logs": ["hello"], "admin token": [], "dlq list": [], "dlq replay": ["--all"],
    "schedules list": [], "nodes list": [], "cache info": [], "cache prune": [], "cache purge": ["--all"], "bench": ["hello"],
    "kv get": ["ns", "k"], "kv put": ["ns", "k", "v"], "kv delete": ["ns", "k"], "kv list": ["ns"],
    "secret put": ["hello", "TOKEN", "--file", "/dev/null"], "secret list": ["hello"], "secret delete": ["hello", "TOKEN"],
    "layer publish": ["textkit", "."], "layer list": [], "event-sources list": [], "event-sources enable": ["5f0c"],
    "event-sources disable": ["5f0c"],
}


def test_every_command_that_reads_a_manifest_is_checked_for_a_missing_one():
    from edgefn.cli.main import _parser
    from tests.test_cli_conventions import _leaves

    def takes_config(path: tuple[str, ...]) -> bool:
        parser = _parser()
        for name in path:
            parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
        return any("--config" in a.option_strings for a in parser._actions)

    assert {" ".join(p) for p in _leaves(_parser()) if takes_config(p)} == set(WITH_CONFIG)


@pytest.mark.parametrize("command", sorted(WITH_CONFIG))
def test_a_missing_manifest_is_named(tmp_path, command):
    missing = tmp_path / "nope.toml"
    if command == "cache prune":  # pruning the cache alone is what it does without a manifest
        proc = edgefn(*command.split(), "--dry-run", "--config", str(missing))
        assert proc.returncode == 0 and f"no manifest at {missing}" in proc.stdout, proc.stdout + proc.stderr
        return
    assert_user_error(edgefn(*command.split(), *WITH_CONFIG[command], "--config", str(missing)), str(missing))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ('{"request": 5}', 'with "request" an object'),
        ('{"request": {"uri": 5}}', "request.uri must be text"),
        ('{"request": {"body": 7}}', "request.body must be a map"),
        ('{"Records": []}', "Records must be a list of one"),
        ('{"config": {"eventType": "viewer-response"}, "request": {}}', 'needs a "response" object'),
    ],
)
def test_a_bad_event_file_is_named_before_the_build(app, tmp_path, content, says):
    event = tmp_path / "event.json"
    if content is not None:
        event.write_text(content)
    assert_user_error(edgefn("invoke", "hello", "--config", str(app), "--event", str(event)), str(event), says)
    assert_user_error(edgefn("invoke", "hello", "--async", "--config", str(app), "--event", str(event)), str(event), says)


def test_an_unknown_function_or_qualifier_is_named_before_the_build(app):
    assert_user_error(edgefn("invoke", "nope", "--config", str(app)), "functions.nope", "no such function", "hello")
    assert_user_error(edgefn("invoke", "hello:live", "--config", str(app)), "hello:live")


def test_a_lambda_shaped_test_event_is_accepted(app, tmp_path):
    """What the AWS console, SAM and `aws lambda invoke` send: the event inside {"Records": [{"cf": ...}]}."""
    event = tmp_path / "cf.json"
    cf = {"config": {"eventType": "viewer-request", "requestId": "cf-test-1", "distributionId": "EDFDVBD6EXAMPLE"},
          "request": {"method": "GET", "uri": "/index.html", "querystring": "", "clientIp": "203.0.113.178",
                      "headers": {"host": [{"key": "Host", "value": "d111111abcdef8.cloudfront.net"}]}}}
    event.write_text(json.dumps({"Records": [{"cf": cf}]}))
    proc = edgefn("invoke", "hello", "--config", str(app), "--event", str(event))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == 200 and "REPORT RequestId: cf-test-1" in proc.stderr


def test_a_taken_port_is_found_before_the_build(app):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = edgefn("serve", "--config", str(app), "--port", str(port), "--tls-port", "0", "--admin-port", "0", timeout=60)
    assert_user_error(proc, f"cannot listen on tcp 127.0.0.1:{port}", "--port")
    assert not (app.parent / ".edgefn" / "modules").exists()  # nothing was built or deployed


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`edgefn events sample viewer-request | head -c0`: the pipe closes before edgefn writes (stdout buffered,
    as in a user's shell: the write fails at the flush)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    cmd = [sys.executable, "-m", "edgefn.cli", "events", "sample", "viewer-request"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env) as proc:
        assert proc.stdout is not None
        proc.stdout.close()
        try:
            _, raw = proc.communicate(timeout=60)
        finally:
            proc.kill()
    err = raw.decode()
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(("lang", "module", "extra"), [("c", "ziglang", "edgefn[c]"), ("python", "componentize_py", "edgefn[python]")])
def test_a_missing_toolchain_is_named_with_the_extra_that_installs_it(tmp_path, lang, module, extra):
    assert edgefn("init", str(tmp_path / "app"), "--lang", lang).returncode == 0
    # the toolchain's package made unimportable, as in an install without the extra
    code = f"import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'edgefn'; from edgefn.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "build", "--config", str(tmp_path / "app" / "edgefn.toml")], capture_output=True, text=True, cwd=REPO, timeout=240,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"pip install '{extra}'" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/hello deployed once for the module (the mistakes below change nothing)."""
    root = tmp_path_factory.mktemp("deployed")
    shutil.copytree(EXAMPLES / "hello", root / "hello", ignore=shutil.ignore_patterns(".edgefn", "build"))
    assert edgefn("deploy", "--config", str(root / "hello" / "edgefn.toml")).returncode == 0
    return root / "hello" / "edgefn.toml"


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "nope"], ["alias", "set", "hello:live", "9"], ["alias", "set", "nope:live", "1"], ["alias", "delete", "hello:nope"],
        ["alias", "list", "nope"], ["rollback", "hello:nope"], ["functions", "show", "hello:9"], ["functions", "show", "nope"],
        ["functions", "show", "hello:no/such"], ["concurrency", "nope", "--reserved", "1"], ["concurrency", "hello", "--reserved", "lots"],
        ["logs", "nope"], ["invoke", "hello:9"], ["invoke", "hello:a:b"], ["invoke", "nope:live"], ["dlq", "replay", "no-such-id"],
    ],
    ids=" ".join,
)
def test_unknown_functions_versions_aliases_and_bad_qualifiers(deployed, command):
    proc = edgefn(*command, "--config", str(deployed))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("edgefn: ") and proc.stderr.count("\n") <= 2, proc.stderr
