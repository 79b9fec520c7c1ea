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


@pytest.mark.parametrize(
    ("change", "key", "problem", "fix"),
    [
        (("memory_mb = 16", "memory_mbs = 16"), "functions.hello.memory_mbs", "unknown key", "did you mean 'memory_mb'"),
        (("memory_mb = 16", "memory_mb = 0"), "functions.hello.memory_mb", "bad value 0", "an integer from 1 to 4,096"),
        (("memory_mb = 16", 'memory_mb = "16"'), "functions.hello.memory_mb", "expected an integer, got '16'", "set functions.hello.memory_mb"),
        (("timeout_ms = 1000", "timeout_ms = true"), "functions.hello.timeout_ms", "expected an integer, got True", ""),
        (('source = "hello.c"', 'source = "hello.rb"'), "functions.hello.source", "bad value 'hello.rb'", "ending in .c, .zig, .py or .wasm"),
        (('source = "hello.c"\n', ""), "functions.hello.source", "is required", "add functions.hello.source"),
        (('GREETING = "hi"', '"1BAD" = "hi"'), "functions.hello.env", "bad value", "[A-Za-z_][A-Za-z0-9_]*"),
        (('GREETING = "hi"', "GREETING = 1"), "functions.hello.env.GREETING", "expected a string", ""),
        (("[functions.auth]", "[functions.Auth_Fn]"), "functions.Auth_Fn", "bad function name", "lowercase letters"),
        (('function = "auth"', 'function = "nope"'), "behaviors[0].viewer_request.function", "unknown function 'nope'", "declared: auth, hello"),
        (('function = "hello"', 'function = "ghost"'), "default_behavior.function", "unknown function 'ghost'", "[functions.NAME]"),
        (('origin = "http://127.0.0.1:9000"', 'origin = "ftp://x"'), "behaviors[0].origin", "bad value 'ftp://x'", "http:// or https:// URL"),
        (('path_pattern = "/api/*"', 'path_pattern = "/api/<x>"'), "behaviors[0].path_pattern", "bad value", "path pattern"),
        (('origin = "http://127.0.0.1:9000"\n', ""), "behaviors[0]", "needs exactly one target", "set either function"),
        (('[default_behavior]\nfunction = "hello"', ""), "default_behavior", "is required when behaviors are declared", "add [default_behavior]"),
        (("[app]", "[apps]"), "apps", "unknown key", "did you mean 'app'"),
        (('source = "auth.wasm"', 'source = "auth.wasm"\nasync_invoke = { on_failure = "http://[::1/x" }'),
         "functions.auth.async_invoke.on_failure", "bad value", "a valid http(s):// URL"),
        (('source = "auth.wasm"', 'source = "auth.wasm"\nasync_invoke = { on_success = "dlq" }'),
         "functions.auth.async_invoke.on_success", "dead-letter store keeps failed events", "leave on_success unset"),
        (('source = "auth.wasm"', 'source = "auth.wasm"\nasync_invoke = { on_success = "function:ghost" }'),
         "functions.auth.async_invoke.on_success", "unknown function 'ghost'", "[functions.NAME]"),
        (("[app]", "[queue]\nthrottle_backoff_min_s = 0\n\n[app]"), "queue.throttle_backoff_min_s", "bad value 0", "a number from 0.01 to 300"),
        (("[app]", "[queue]\nretry_delays_s = [1, 2, 3]\n\n[app]"), "queue.retry_delays_s", "bad value", "one or two delays"),
        (("[app]", "[queue]\nthrottle_backoff_min_s = 5\nthrottle_backoff_max_s = 1\n\n[app]"), "queue.throttle_backoff_max_s", "below", "raise it"),
    ],
)
def test_bad_manifest_names_file_key_value_and_fix(tmp_path, change, key, problem, fix):
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert problem in err.problem
    assert fix in err.fix
    assert str(path) in str(err) and key in str(err)


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
