"""The module store: compile once, load from disk after, recover from bad artifacts, share between processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgefn.core.app import FunctionSpec
from edgefn.core.events import EdgeResponse
from edgefn.core.exceptions import (
    AbiMismatch,
    ImportNotAllowed,
    InvalidModule,
    MissingExport,
)
from edgefn.runtime.engine import EngineSettings
from edgefn.runtime.invoker import Runtime
from tests.conftest import REPO, make_event, wat_guest


def invoke_ok(rt: Runtime, digest: str) -> None:
    done = rt.invoker.invoke_sync(FunctionSpec("guest", digest), make_event())
    assert isinstance(done.result, EdgeResponse) and done.result.status == 200


def test_first_load_compiles_then_a_new_process_loads_from_disk(tmp_path):
    wasm = wat_guest()
    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wasm)
        loaded, fresh = rt.store.load(digest, "guest")
        assert fresh and loaded.source == "compiled"
        assert (rt.store.stats.compiles, rt.store.stats.disk_loads) == (1, 0)
        again, fresh_again = rt.store.load(digest, "guest")
        assert again is loaded and not fresh_again and rt.store.stats.memory_hits == 1
        assert rt.store.artifact_path(digest).exists()
    with Runtime(tmp_path) as rt:  # a restart: same directory, new engine
        loaded, fresh = rt.store.load(digest, "guest")
        assert fresh and loaded.source == "disk"
        assert (rt.store.stats.compiles, rt.store.stats.disk_loads) == (0, 1)
        invoke_ok(rt, digest)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:10], id="truncated-header"),
        pytest.param(lambda b: b[:-40] + bytes(40), id="corrupted-payload"),
        pytest.param(lambda b: b"NOTOURS!" + b[8:], id="bad-magic"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_damaged_artifact_is_detected_and_rebuilt(tmp_path, damage, caplog):
    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wat_guest())
        rt.store.load(digest, "guest")
        path = rt.store.artifact_path(digest)
    path.write_bytes(damage(path.read_bytes()))
    with Runtime(tmp_path) as rt:
        loaded, _ = rt.store.load(digest, "guest")
        assert loaded.source == "compiled"
        assert rt.store.stats.rebuilt_artifacts == 1
        invoke_ok(rt, digest)
        assert "unusable" in caplog.text and str(path) in caplog.text
    with Runtime(tmp_path) as rt:  # and the rebuilt artifact is good again
        loaded, _ = rt.store.load(digest, "guest")
        assert loaded.source == "disk"


def test_foreign_engine_artifact_is_detected_and_rebuilt(tmp_path):
    foreign = EngineSettings(consume_fuel=False)  # generates different code: a foreign artifact
    assert foreign.fingerprint() != EngineSettings().fingerprint()
    with Runtime(tmp_path / "other", settings=foreign) as other:
        digest = other.store.add(wat_guest())
        other.store.load(digest, "guest")
        foreign_blob = other.store.artifact_path(digest).read_bytes()
    with Runtime(tmp_path / "ours") as rt:
        rt.store.add(wat_guest())
        rt.store.artifact_path(digest).write_bytes(foreign_blob)
        loaded, _ = rt.store.load(digest, "guest")
        assert loaded.source == "compiled" and rt.store.stats.rebuilt_artifacts == 1
        invoke_ok(rt, digest)


def test_artifact_for_another_module_is_never_used(tmp_path):
    with Runtime(tmp_path) as rt:
        a = rt.store.add(wat_guest())
        b = rt.store.add(wat_guest(pages=2))
        rt.store.load(a, "a")
        rt.store.artifact_path(b).write_bytes(rt.store.artifact_path(a).read_bytes())
    with Runtime(tmp_path) as rt:
        loaded, _ = rt.store.load(b, "b")
        assert loaded.source == "compiled" and loaded.info.memory_min_bytes == 2 * 65536


def test_memory_cache_is_bounded_by_count_and_bytes(tmp_path):
    with Runtime(tmp_path) as rt:
        rt.store.max_entries = 2
        digests = [rt.store.add(wat_guest(pages=p)) for p in (1, 2, 3)]
        for d in digests:
            rt.store.load(d, "g")
        assert rt.store.ready_digests() == digests[1:] and rt.store.stats.evictions == 1
        rt.store.max_entries = 100
        rt.store.max_bytes = 1  # every entry is larger: only the newest stays
        rt.store.load(digests[0], "g")
        assert rt.store.ready_digests() == [digests[0]]


def test_two_processes_share_one_store(tmp_path):
    with Runtime(tmp_path) as rt:
        digest = rt.store.add(wat_guest())
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from edgefn.runtime.invoker import FunctionSpec, Runtime
        from tests.conftest import make_event
        with Runtime(Path({str(tmp_path)!r})) as rt:
            for i in range(20):
                rt.store.evict({digest!r})
                rt.invoker.invoke_sync(FunctionSpec("guest", {digest!r}), make_event())
            print(rt.store.stats.compiles + rt.store.stats.disk_loads)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "20"
    artifacts = list(rt.store.artifact_path(digest).parent.iterdir())
    assert [a.name for a in artifacts] == [f"{digest}.cwasm"]  # no temp files left behind
    with Runtime(tmp_path) as rt:
        loaded, _ = rt.store.load(digest, "guest")
        assert loaded.source == "disk"


def test_invalid_wasm_is_refused(runtime):
    digest = runtime.store.add(b"\x00asm\x01\x00\x00\x00garbage")
    with pytest.raises(InvalidModule, match="not a valid wasm module"):
        runtime.store.load(digest, "broken")


def test_import_not_granted_is_refused_at_load_naming_it(runtime):
    wasm = wat_guest(imports='(import "env" "open_socket" (func (param i32) (result i32)))')
    with pytest.raises(ImportNotAllowed) as info:
        runtime.store.load(runtime.store.add(wasm), "sneaky")
    assert (info.value.module, info.value.name) == ("env", "open_socket")
    assert "env.open_socket" in str(info.value) and "sneaky" in str(info.value)


def test_host_import_with_wrong_type_is_refused(runtime):
    wasm = wat_guest(imports='(import "edgefn:host/v1" "log" (func (param i32)))')
    with pytest.raises(ImportNotAllowed, match="log"):
        runtime.store.load(runtime.store.add(wasm), "g")


def test_guest_for_another_abi_version_is_refused(runtime):
    import wasmtime

    wat = """(module (memory (export "memory") 1) (func (export "edgefn_abi_v2"))
      (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "edgefn_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    with pytest.raises(AbiMismatch) as info:
        runtime.store.load(runtime.store.add(wasmtime.wat2wasm(wat)), "future")
    assert info.value.guest_versions == [2] and "v2" in str(info.value) and "v1" in str(info.value)


@pytest.mark.parametrize(
    ("wat", "export"),
    [
        ('(module (memory (export "memory") 1))', "edgefn_abi_v1"),
        ('(module (memory (export "memory") 1) (func (export "edgefn_abi_v1")) (func (export "edgefn_handle") (param i32 i32) (result i64) (i64.const 0)))', "edgefn_alloc"),
        ('(module (memory (export "memory") 1) (func (export "edgefn_abi_v1")) (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0)) (func (export "edgefn_handle") (param i32 i32) (result i32) (i32.const 0)))', "edgefn_handle"),
        ('(module (memory 1) (func (export "edgefn_abi_v1")) (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0)) (func (export "edgefn_handle") (param i32 i32) (result i64) (i64.const 0)))', "memory"),
    ],
)
def test_missing_or_mistyped_export_is_refused(runtime, wat, export):
    import wasmtime

    with pytest.raises(MissingExport) as info:
        runtime.store.load(runtime.store.add(wasmtime.wat2wasm(wat)), "incomplete")
    assert info.value.export == export


def test_code_missing_from_store_names_the_digest(runtime):
    with pytest.raises(InvalidModule, match="not in the module store"):
        runtime.store.load("ab" * 32, "ghost")


def test_wasm_is_content_addressed(tmp_path: Path):
    with Runtime(tmp_path) as rt:
        wasm = wat_guest()
        assert rt.store.add(wasm) == rt.store.add(wasm)
        assert len(list((tmp_path / "wasm").iterdir())) == 1


def test_a_source_bundle_is_code_by_digest_with_a_read_only_tree(tmp_path):
    """`edgefn dev`'s Python functions: a runtime digest plus a source tree, one digest for both."""
    with Runtime(tmp_path) as rt:
        runtime = rt.store.add(wat_guest())  # a core module: a bundle must name a component
        files = {"app.py": b"def handler(event): ...\n", "lib/util.py": b"X = 1\n"}
        digest = rt.store.add_sources(runtime, "app", files)
        assert rt.store.kind_of(digest) == "sources"
        assert rt.store.add_sources(runtime, "app", dict(files)) == digest  # same inputs, same code
        changed = rt.store.add_sources(runtime, "app", {**files, "lib/util.py": b"X = 2\n"})
        assert changed != digest
        trees = sorted((tmp_path / "sources").iterdir())
        assert len(trees) == 2 and all(not p.name.startswith(".") for p in trees)
        for tree in trees:
            util = tree / "lib" / "util.py"
            assert util.read_bytes() in (b"X = 1\n", b"X = 2\n") and not util.stat().st_mode & 0o222  # nobody may write it
        with pytest.raises(InvalidModule, match="which is not a component"):
            rt.store.load(digest, "app")
        for tree in trees:
            shutil.rmtree(tree)
        with pytest.raises(InvalidModule, match="sources of bundle .* are missing"):
            rt.store.load(changed, "app")
