"""Malformed manifests fail at load with the file, the key path, the bad value and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgefn.core.exceptions import ManifestError
from edgefn.manifest.load import load_manifest
from edgefn.manifest.resolve import resolve

GOOD = """
[app]
name = "shop"

[functions.hello]
source = "hello.c"
memory_mb = 16
timeout_ms = 1000
fuel = 5_000_000
env = { GREETING = "hi" }

[functions.auth]
source = "auth.wasm"

[[behaviors]]
path_pattern = "/api/*"
origin = "http://127.0.0.1:9000"
viewer_request = { function = "auth", include_body = true }

[default_behavior]
function = "hello"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgefn.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_manifest_loads_and_resolves(tmp_path):
    path = write(tmp_path, GOOD)
    manifest = load_manifest(path)
    hello = manifest.functions["hello"]
    assert (hello.memory_mb, hello.timeout_ms, hello.fuel, hello.env) == (16, 1000, 5_000_000, {"GREETING": "hi"})
    auth = manifest.functions["auth"]
    assert (auth.memory_mb, auth.timeout_ms) == (128, 5000)  # Lambda@Edge viewer-trigger defaults
    app = resolve(manifest, path, {"hello": "a" * 64, "auth": "b" * 64})
    assert app.sources["hello"] == tmp_path / "hello.c" and app.store_dir == tmp_path / ".edgefn" / "modules"
    assert app.functions["hello"].limits.memory_mb == 16 and app.functions["hello"].digest == "a" * 64
    assert [b.path_pattern for b in app.behaviors] == ["/api/*", "*"]
    assert app.behaviors[0].hooks["viewer-request"].include_body is True
    assert app.behaviors[1].is_default


INVALID = Path(__file__).resolve().parent / "manifest" / "invalid"


@pytest.mark.parametrize("case", sorted(p.stem for p in INVALID.glob("*.toml")))
def test_bad_manifest_names_file_key_value_and_fix(case):
    """tests/manifest/invalid/CASE.toml fails to load with exactly CASE.err ({file} is the manifest's path),
    as Spin's crates/manifest/tests/ui cases do; a new case is two files, no code."""
    path = INVALID / f"{case}.toml"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    expected = (INVALID / f"{case}.err").read_text().rstrip("\n").replace("{file}", str(path))
    assert str(info.value) == expected
    assert info.value.file == str(path) and info.value.key and info.value.key in expected and info.value.fix


def test_duplicate_behavior_is_refused(tmp_path):
    dup = GOOD.replace("[default_behavior]", '[[behaviors]]\npath_pattern = "/api/*"\nfunction = "hello"\n\n[default_behavior]')
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, dup))
    assert info.value.key == "behaviors[1]" and "duplicates behaviors[0]" in info.value.problem


def test_env_over_the_lambda_size_limit_is_refused(tmp_path):
    big = GOOD.replace('env = { GREETING = "hi" }', 'env = { GREETING = "' + "x" * 5000 + '" }')
    with pytest.raises(ManifestError, match="at most 4096 bytes"):
        load_manifest(write(tmp_path, big))


def test_toml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "[functions.hello\nsource = 1")
    with pytest.raises(ManifestError, match="not valid TOML") as info:
        load_manifest(path)
    assert info.value.file == str(path)


def test_missing_manifest_says_how_to_fix(tmp_path):
    with pytest.raises(ManifestError, match="--config"):
        load_manifest(tmp_path / "nope.toml")
