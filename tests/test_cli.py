"""The CLI as a user runs it: `edgefn build` and `edgefn invoke` in a subprocess, on real sources."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.conftest import REPO
from tests.conftest import run_edgefn as edgefn

EXAMPLES = REPO / "examples"


def write_app(tmp_path: Path, source: str) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "fn.c").write_text(textwrap.dedent(source))
    manifest = tmp_path / "edgefn.toml"
    manifest.write_text('[functions.fn]\nsource = "src/fn.c"\n\n[default_behavior]\nfunction = "fn"\n')
    return manifest


def test_build_reports_compiler_errors_with_file_and_line(tmp_path):
    manifest = write_app(
        tmp_path,
        """\
        #include "edgefn.h"

        edgefn_result edgefn_main(const edgefn_event *ev) {
            this is not C;
        }
        """,
    )
    proc = edgefn("build", "--config", str(manifest))
    assert proc.returncode == 2
    assert f"{tmp_path / 'src' / 'fn.c'}:4:" in proc.stderr or "fn.c:4:" in proc.stderr
    assert "error:" in proc.stderr


def test_build_precompiles_every_function_into_the_store(tmp_path):
    manifest = EXAMPLES / "hello" / "edgefn.toml"
    proc = edgefn("build", "--config", str(manifest))
    assert proc.returncode == 0, proc.stderr
    assert "hello" in proc.stdout and "precompiled" in proc.stdout
    store = EXAMPLES / "hello" / ".edgefn" / "modules"
    assert list((store / "artifacts").rglob("*.cwasm"))


def test_build_one_source_file(tmp_path):
    out = tmp_path / "hello.wasm"
    proc = edgefn("build", str(EXAMPLES / "hello" / "src" / "hello.c"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\0asm"


def test_invoke_prints_the_result_and_the_report_line():
    events = sorted((EXAMPLES / "auth" / "events").glob("*.json"))
    assert events, "the auth example ships sample events"
    outputs = {}
    for event in events:
        proc = edgefn("invoke", "auth", "--config", str(EXAMPLES / "auth" / "edgefn.toml"), "--event", str(event))
        assert proc.returncode == 0, proc.stderr
        assert "REPORT RequestId:" in proc.stderr and "Billed Duration:" in proc.stderr
        outputs[event.name] = json.loads(proc.stdout)
    statuses = {doc.get("status") for doc in outputs.values()}
    assert 401 in statuses  # some sample is refused ...
    assert any("status" not in doc for doc in outputs.values())  # ... and some continues as a request


def test_invoke_of_an_unknown_function_names_the_choices():
    proc = edgefn("invoke", "nope", "--config", str(EXAMPLES / "hello" / "edgefn.toml"))
    assert proc.returncode == 2
    assert "no such function" in proc.stderr and "hello" in proc.stderr
