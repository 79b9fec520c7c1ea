"""Layers through the CLI and a real server: publish, list, a Python function importing a Python layer
(examples/python-layer), a C function linked with a wasm layer (examples/c-layer), and a published function
version pinning the layer version it was built with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, run_edgefn, wait_for
from tests.servers import edge_server

EXAMPLE = REPO / "examples" / "python-layer"
C_EXAMPLE = REPO / "examples" / "c-layer"
TOKEN = "layers-token"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """The example, copied: its manifest and function, and the layer's directory."""
    dest = tmp_path / "python-layer"
    shutil.copytree(EXAMPLE, dest)
    return dest / "edgefn.toml"


def _publish(config: Path, path: Path, *extra: str) -> str:
    done = run_edgefn("layer", "publish", "textkit", str(path), "--config", str(config), *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_publish_numbers_versions_and_list_shows_them_by_digest(app):
    layer = app.parent / "textkit-layer"
    assert "published layer textkit:1 (python" in _publish(app, layer, "--description", "first")
    assert "published layer textkit:2" in _publish(app, layer)
    listed = json.loads(run_edgefn("layer", "list", "--json", "--config", str(app)).stdout)
    assert [(v["LayerName"], v["Version"]) for v in listed] == [("textkit", 1), ("textkit", 2)]
    assert listed[0]["CodeSha256"] == listed[1]["CodeSha256"] and listed[0]["Description"] == "first"  # the same files, the same digest
    (layer / "textkit" / "__pycache__").mkdir()
    (layer / "textkit" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert "textkit:3" in _publish(app, layer)
    assert json.loads(run_edgefn("layer", "list", "textkit", "--json", "--config", str(app)).stdout)[2]["CodeSha256"] == listed[0]["CodeSha256"]


@pytest.mark.parametrize("args, message", [
    (("layer", "publish", "textkit", "no-such-dir"), "no such file or directory"),
    (("layer", "publish", "Bad_Name", "."), "bad layer name"),
    (("layer", "publish", "textkit", "edgefn.toml"), "a layer is a directory of pure-Python packages, or a core wasm module"),
    (("layer", "publish", "textkit", "src/articles.py"), "a layer is a directory of pure-Python packages, or a core wasm module"),
])
def test_publish_mistakes_are_one_line_errors(app, args, message):
    done = run_edgefn(*args, "--config", str(app), cwd=app.parent)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2


def test_a_layer_not_published_fails_the_build_at_its_key(app):
    app.write_text(app.read_text().replace('layers = ["textkit:1"]', 'layers = ["textkit:9"]'))
    done = run_edgefn("build", "--config", str(app))
    assert done.returncode != 0 and "functions.articles.layers" in done.stderr and "textkit:9 is not published" in done.stderr
    assert "edgefn layer publish textkit" in done.stderr and "Traceback" not in done.stderr


def test_a_c_function_cannot_take_a_python_layer(app):
    _publish(app, app.parent / "textkit-layer")
    (app.parent / "src" / "page.c").write_text('#include "edgefn.h"\nedgefn_result edgefn_main(const edgefn_event *ev) { return edgefn_continue(ev); }\n')
    app.write_text(app.read_text() + '\n[functions.page]\nsource = "src/page.c"\nlayers = ["textkit:1"]\n')
    done = run_edgefn("build", "--config", str(app))
    assert done.returncode != 0 and "layer textkit:1 is pure-Python packages, for Python functions; a c function cannot use it" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_function_imports_its_layer_and_a_published_version_keeps_the_one_it_was_built_with(app):
    layer = app.parent / "textkit-layer"
    _publish(app, layer)
    with edge_server(app, tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        moved = httpx.get(f"{server.base}/articles/Crème Brûlée: A Guide", timeout=30)
        assert moved.status_code == 301 and moved.headers["location"] == "/articles/creme-brulee-a-guide"
        page = httpx.get(f"{server.base}/articles/creme-brulee-a-guide", timeout=30)
        assert page.status_code == 200 and page.headers["x-textkit"] == "1.0" and "<h1>Creme Brulee A Guide</h1>" in page.text
        published = run_edgefn("publish", "articles", "--config", str(app))
        assert published.returncode == 0, published.stderr

        (layer / "textkit" / "__init__.py").write_text((layer / "textkit" / "__init__.py").read_text().replace('VERSION = "1.0"', 'VERSION = "2.0"'))
        assert "textkit:2" in _publish(app, layer)
        app.write_text(app.read_text().replace('layers = ["textkit:1"]', 'layers = ["textkit:2"]'))
        deployed = run_edgefn("deploy", "--config", str(app))
        assert deployed.returncode == 0, deployed.stderr
        wait_for(lambda: httpx.get(f"{server.base}/articles/x", timeout=30).headers.get("x-textkit") == "2.0", 60, "$LATEST on textkit:2")

        auth = {"Authorization": f"Bearer {TOKEN}"}
        event = {"request": {"method": "GET", "uri": "/articles/x", "querystring": ""}}
        one = httpx.post(f"{server.admin}/2015-03-31/functions/articles/invocations", params={"Qualifier": "1"}, json=event, headers=auth, timeout=60)
        assert one.status_code == 200 and one.json()["headers"]["x-textkit"][0]["value"] == "1.0"  # version 1 keeps textkit:1's code
        config = httpx.get(f"{server.admin}/2015-03-31/functions/articles/configuration", params={"Qualifier": "1"}, headers=auth, timeout=30).json()
        latest = httpx.get(f"{server.admin}/2015-03-31/functions/articles/configuration", headers=auth, timeout=30).json()
        assert config["Layers"] == [{"Arn": "edgefn:layer:textkit:1"}] and latest["Layers"] == [{"Arn": "edgefn:layer:textkit:2"}]
        assert config["CodeSha256"] != latest["CodeSha256"]


@pytest.fixture
def c_app(tmp_path: Path) -> Path:
    dest = tmp_path / "c-layer"
    shutil.copytree(C_EXAMPLE, dest)
    return dest / "edgefn.toml"


def _publish_mathlib(config: Path, version_answer: int = 1) -> str:
    source = config.parent / "mathlib-layer" / "mathlib.c"
    source.write_text(source.read_text().replace("return 1; }", f"return {version_answer}; }}"))
    done = run_edgefn("layer", "publish", "mathlib", str(source), "--config", str(config))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_c_function_is_linked_with_its_wasm_layer_and_a_published_version_keeps_it(c_app):
    assert "published layer mathlib:1 (wasm" in _publish_mathlib(c_app)
    with edge_server(c_app, tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        r = httpx.get(f"{server.base}/fib/50", timeout=30)
        assert r.status_code == 200 and r.text == "12586269025" and r.headers["x-mathlib-version"] == "1"
        assert httpx.get(f"{server.base}/isqrt/1000000", timeout=30).text == "1000"
        assert run_edgefn("publish", "numbers", "--config", str(c_app)).returncode == 0
        assert "mathlib:2" in _publish_mathlib(c_app, 2)
        c_app.write_text(c_app.read_text().replace('layers = ["mathlib:1"]', 'layers = ["mathlib:2"]'))
        deployed = run_edgefn("deploy", "--config", str(c_app))
        assert deployed.returncode == 0, deployed.stderr
        wait_for(lambda: httpx.get(f"{server.base}/fib/1", timeout=30).headers.get("x-mathlib-version") == "2", 60, "$LATEST on mathlib:2")
        event = {"request": {"method": "GET", "uri": "/fib/10", "querystring": ""}}
        one = httpx.post(f"{server.admin}/2015-03-31/functions/numbers/invocations", params={"Qualifier": "1"}, json=event,
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert one.status_code == 200 and one.json()["headers"]["x-mathlib-version"][0]["value"] == "1" and one.json()["body"]["data"] == "55"


def test_an_import_no_layer_exports_fails_the_build_naming_it(c_app):
    _publish_mathlib(c_app)
    source = c_app.parent / "src" / "numbers.c"
    source.write_text(source.read_text().replace('LAYER("isqrt") uint32_t isqrt(uint32_t x);', 'LAYER("cbrt") uint32_t isqrt(uint32_t x);'))
    done = run_edgefn("build", "--config", str(c_app))
    assert done.returncode != 0 and "imports layer:mathlib.cbrt, which none of its layers (mathlib:1) exports" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_that_is_not_a_core_module_is_refused_as_a_wasm_layer(c_app):
    junk = c_app.parent / "junk.wasm"
    junk.write_bytes(b"\0asm\x0d\0\x01\0not a module")  # a component's preamble
    done = run_edgefn("layer", "publish", "junk", str(junk), "--config", str(c_app))
    assert done.returncode != 0 and "not a core WebAssembly module" in done.stderr and "Traceback" not in done.stderr
