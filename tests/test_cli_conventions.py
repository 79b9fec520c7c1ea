"""What a user of a CLI of this kind expects beyond its commands: help with examples, a JSON Schema of the
manifest, shell completion, and terminal output they can choose (-q, --log-level, --log-format json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import jsonschema
import pytest

from edgefn.build.toolchain import cache_dir
from edgefn.cli.main import _parser
from tests.conftest import REPO
from tests.conftest import run_edgefn as edgefn
from tests.servers import edge_server


def _leaves(parser, prefix=()):
    """Every runnable command path (`serve`, `alias set`, ...) of the real parser."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _leaves(sub, (*prefix, name))
            return
    yield prefix


COMMANDS = [" ".join(path) for path in _leaves(_parser())]


def test_there_are_commands_to_check():
    assert {"serve", "dev", "alias set", "cache prune", "schema", "completion"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_examples(command, capsys):
    from edgefn.cli.main import main

    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("usage: edgefn " + command)
    assert lines[2].strip() and not lines[2].startswith(("positional", "options")), f"no description:\n{text}"
    assert "examples:\n  " in text and f"edgefn {command.split()[0]}" in text.split("examples:")[1], text


def manifests() -> list[Path]:
    return sorted([REPO / "examples" / "edgefn.toml", *REPO.glob("examples/*/edgefn.toml"), *REPO.glob("tests/apps/**/edgefn.toml")])


@pytest.fixture(scope="module")
def schema():
    proc = edgefn("schema")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


@pytest.mark.parametrize("manifest", manifests(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_manifest_validates_against_the_schema(schema, manifest):
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in schema.iter_errors(tomllib.loads(manifest.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize("lang", ["c", "python"])
def test_scaffolds_validate_against_the_schema(schema, tmp_path, lang):
    assert edgefn("init", str(tmp_path / "app"), "--lang", lang).returncode == 0
    assert not list(schema.iter_errors(tomllib.loads((tmp_path / "app" / "edgefn.toml").read_text())))


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ('[functions.a]\nsource = "a.c"\nmemory_mb = 0\n', "functions.a.memory_mb"),
        ('[functions.a]\nsource = "a.c"\nmemroy_mb = 64\n', "functions.a"),
        ("[functions.a]\nmemory_mb = 64\n", "functions.a"),
        ('[functions.A]\nsource = "a.c"\n', "functions"),
        ('[server]\nhttp1 = "nginx"\n', "server.http1"),
        ('[[behaviors]]\npath_pattern = "/a"\nviewer_request = { function = "a", include_bodyy = true }\n', "behaviors.0.viewer_request"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(schema, tmp_path, toml, where):
    errors = list(schema.iter_errors(tomllib.loads(toml)))
    assert errors and any(".".join(map(str, e.absolute_path)).startswith(where) for e in errors), [e.message for e in errors]
    (tmp_path / "edgefn.toml").write_text(toml)
    assert edgefn("build", "--config", str(tmp_path / "edgefn.toml")).returncode == 2  # and so does the loader


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_is_a_valid_script_that_knows_the_commands():
    proc = edgefn("completion", "bash")
    assert proc.returncode == 0
    script = proc.stdout
    assert "serve" in script and "--config" in script and "prune" in script
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # the completion a user gets for `edgefn se<TAB>`
    probe = script + '\nCOMP_WORDS=(edgefn se); COMP_CWORD=1; COMP_LINE="edgefn se"; COMP_POINT=9\n_shtab_edgefn\necho "${COMPREPLY[@]}"\n'
    out = subprocess.run(["bash", "-c", probe], text=True, capture_output=True, timeout=30)
    assert "serve" in out.stdout.split(), out.stdout + out.stderr


def test_invoke_log_format_json_is_one_object_per_line(tmp_path):
    assert edgefn("init", str(tmp_path / "app")).returncode == 0
    proc = edgefn("invoke", "origin", "--config", str(tmp_path / "app" / "edgefn.toml"), "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip() and not line.startswith("executed version")]
    assert any(doc.get("message", "").startswith("REPORT RequestId:") for doc in lines), lines
    assert all({"time", "level", "logger"} <= doc.keys() for doc in lines)


def test_serve_log_format_json_and_quiet(tmp_path):
    assert edgefn("init", str(tmp_path / "app")).returncode == 0
    config = tmp_path / "app" / "edgefn.toml"
    with edge_server(config, "--log-format", "json", tls=False) as server:
        assert httpx.get(f"{server.base}/json-me").status_code == 200
        deadline_text = ""
        for _ in range(200):
            deadline_text = server.log.read_text()
            if '"path": "/json-me"' in deadline_text:
                break
            httpx.get(f"{server.base}/_edgefn/health")
        docs = [json.loads(line) for line in deadline_text.splitlines() if line.strip()]  # every line parses: jq can read it
        access = [d for d in docs if d["logger"] == "edgefn.access" and d.get("path") == "/json-me"]
        assert access and access[0]["status"] == 200  # the access record's own fields, not JSON inside text
        assert any(d["logger"] == "edgefn.server" and d["message"].startswith("serving app") for d in docs)
    with edge_server(config, "-q", tls=False) as server:
        assert httpx.get(f"{server.base}/quiet").status_code == 200
        assert httpx.get(f"{server.base}/_edgefn/health").status_code == 200
        text = server.log.read_text()
        assert "REPORT RequestId" not in text and "/quiet" not in text and "edgefn: serving" not in text, text
    logs = edgefn("logs", "origin", "--config", str(config))
    assert logs.returncode == 0 and "REPORT RequestId" in logs.stdout  # -q quiets the terminal, not the function's stream


def test_the_c_scaffold_tells_clangd_where_edgefn_h_is_and_how_to_build(tmp_path):
    from edgefn.build.toolchain import zig_command

    assert edgefn("init", str(tmp_path / "app")).returncode == 0
    flags = (tmp_path / "app" / "compile_flags.txt").read_text().split()
    include = next(f[2:] for f in flags if f.startswith("-I"))
    assert (Path(include) / "edgefn.h").is_file() and "--target=wasm32-freestanding" in flags
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(cache_dir()), ZIG_LOCAL_CACHE_DIR=str(cache_dir() / "local"))
    compiled = subprocess.run([*zig_command(), "cc", "-c", "-o", str(tmp_path / "o.o"), *flags, "src/origin.c"], cwd=tmp_path / "app", env=env, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr  # what clangd runs: the flags alone are enough


def test_the_python_scaffold_has_unit_tests_that_run_on_the_host(tmp_path):
    assert edgefn("init", str(tmp_path / "app"), "--lang", "python").returncode == 0
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path / "app", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_the_python_sdk_readme_example_and_its_host_tests_run(tmp_path):
    """guest-sdk/python/README.md's src/auth.py and its tests/test_auth.py, as a user copies them."""
    import re

    readme = (REPO / "guest-sdk" / "python" / "README.md").read_text()
    (tmp_path / "src").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "src" / "auth.py").write_text(re.search(r"```python\n# src/auth.py\n(.*?)```", readme, re.S).group(1))
    (tmp_path / "tests" / "test_auth.py").write_text(re.search(r"```python\n# tests/test_auth.py.*?\n(.*?)```", readme, re.S).group(1))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout + proc.stderr


def test_a_long_build_step_shows_a_live_line_with_its_elapsed_time_on_a_terminal():
    """cli/terminal.StepProgress, given a terminal-like stream: the step's name and seconds, redrawn, then its
    "done" line in its place. (Without a terminal each step is one line: app_build._step at INFO.)"""
    import io
    import logging
    import time

    from edgefn.cli.terminal import StepProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = StepProgress(screen)
    log = logging.getLogger("edgefn.build.test-progress")
    log.propagate = False
    log.addHandler(progress)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("building py-auth …", extra={"step": "building py-auth", "phase": "start"})
        deadline = time.monotonic() + 30
        while "building py-auth … 0." not in screen.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "building py-auth … 0." in screen.getvalue()  # shown once it has run 0.3 s, with its elapsed time
        log.info("building py-auth: done in 400 ms", extra={"step": "building py-auth", "phase": "done"})
        text = screen.getvalue()
        assert text.endswith("\r\033[Kedgefn: building py-auth: done in 400 ms\n"), repr(text[-120:])
    finally:
        log.removeHandler(progress)


@pytest.mark.parametrize(
    ("choice", "no_color", "tty", "colored"),
    [("auto", None, True, True), ("auto", "1", True, False), ("auto", None, False, False), ("always", "1", False, True), ("never", None, True, False)],
)
def test_color_follows_the_option_then_no_color_then_the_terminal(monkeypatch, choice, no_color, tty, colored):
    import io

    from edgefn.dev.console import COLOR_ENV, DevConsole

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setenv(COLOR_ENV, choice)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    stream = Stream()
    DevConsole(stream).info("hello")
    assert ("\033[" in stream.getvalue()) is colored


def test_log_level_debug_shows_each_build_step_as_it_starts(tmp_path):
    assert edgefn("init", str(tmp_path / "app")).returncode == 0
    config = str(tmp_path / "app" / "edgefn.toml")
    quiet = edgefn("build", "--config", config)
    loud = edgefn("build", "--config", config, "--log-level", "debug")
    assert quiet.returncode == loud.returncode == 0
    assert "building origin (src/origin.c) …" in loud.stderr and "building origin (src/origin.c) …" not in quiet.stderr
