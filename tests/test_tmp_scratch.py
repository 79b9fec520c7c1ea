"""/tmp: each instance's private scratch directory through WASI, capped by ephemeral_storage_mb, kept for a warm
instance's life and deleted with it, with no way out (a real C guest built for wasm32-wasi)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgefn.build.languages import build_source
from edgefn.build.toolchain import cache_dir
from edgefn.core.app import FunctionSpec, Limits
from edgefn.core.events import EdgeResponse
from edgefn.core.exceptions import EphemeralStorageLimitExceeded, ManifestError
from edgefn.manifest.load import load_manifest
from edgefn.runtime.invoker import Runtime
from tests.conftest import GUESTS_C, log_lines, make_event


@pytest.fixture(scope="module")
def scratch_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("scratch-guest") / "scratch.wasm"
    return build_source(GUESTS_C / "scratch.c", out, "wasi", cache_dir())


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(tmp_path / "store", workers=2) as runtime:
        yield runtime


@pytest.fixture
def call(rt: Runtime) -> Callable[..., dict[str, str]]:
    def _call(fn: FunctionSpec, query: str, request_id: str = "r-tmp") -> dict[str, str]:
        result = rt.invoker.invoke_sync(fn, make_event(request_id=request_id, querystring=query)).result
        assert isinstance(result, EdgeResponse) and result.status == 200
        return dict(line.split("=", 1) for line in result.body.data.decode().splitlines())

    return _call


def _spec(rt: Runtime, wasm: bytes, reuse: bool = False, storage_mb: int = 512) -> FunctionSpec:
    return FunctionSpec(name="scratch", digest=rt.store.add(wasm), limits=Limits(ephemeral_storage_mb=storage_mb), reuse_instances=reuse)


def _instance_dirs(rt: Runtime) -> list[Path]:
    root = rt.sandbox.scratch_root.path
    return sorted(root.iterdir()) if root is not None else []


def test_a_warm_instance_keeps_its_tmp_and_a_fresh_one_starts_empty(rt, call, scratch_wasm):
    warm = _spec(rt, scratch_wasm, reuse=True)
    assert call(warm, "op=write&kb=100") == {"written": str(100 * 1024), "errno": "0", "enospc": "0"}
    assert call(warm, "op=size")["size"] == str(100 * 1024)  # the same instance: its /tmp is still there
    assert len(_instance_dirs(rt)) == 1
    fresh = _spec(rt, scratch_wasm)
    assert call(fresh, "op=write&kb=8")["written"] == "8192"
    assert call(fresh, "op=size")["size"] == "-1"  # a fresh instance per request: each gets a new, empty /tmp
    assert len(_instance_dirs(rt)) == 1  # and the fresh instances' went with them (the warm one's stays)
    rt.invoker.pools.close()  # the warm instance goes: its /tmp with it
    assert _instance_dirs(rt) == []


def test_writing_past_the_cap_is_enospc_for_the_guest_and_named_in_the_report(rt, call, scratch_wasm, caplog):
    fn = _spec(rt, scratch_wasm, storage_mb=1)
    with caplog.at_level(logging.INFO, logger="edgefn.function.scratch"):
        answer = call(fn, "op=write&kb=2048", request_id="r-full")
    assert answer["enospc"] == "1" and 900 * 1024 <= int(answer["written"]) <= 1024 * 1024
    report = next(line for _, line in log_lines(caplog) if line.startswith("REPORT RequestId: r-full"))
    assert "Storage Error: EphemeralStorageLimitExceeded" in report and "/tmp's 1 MB" in report and "Outcome: ok" in report
    assert call(fn, "op=write&kb=512")["errno"] == "0"  # the next (fresh) instance has its whole cap again


def test_a_guest_that_fails_after_filling_tmp_fails_with_the_typed_error(rt, scratch_wasm):
    fn = _spec(rt, scratch_wasm, storage_mb=2)
    with pytest.raises(EphemeralStorageLimitExceeded) as info:
        rt.invoker.invoke_sync(fn, make_event(request_id="r-fail", querystring="op=fill-then-fail"))
    err = info.value
    assert (err.function, err.request_id, err.storage_mb, err.kind) == ("scratch", "r-fail", 2, "ephemeral_storage_limit_exceeded")
    assert "ephemeral_storage_mb" in str(err) and "trap" in str(err)
    assert _instance_dirs(rt) == []


def test_no_path_leaves_tmp(rt, call, scratch_wasm, tmp_path):
    warm = _spec(rt, scratch_wasm, reuse=True)
    answer = call(warm, "op=escape")
    assert answer == {
        "dotdot": "refused", "absolute": "refused", "abs-link": "refused", "rel-link": "refused", "up-dir": "refused", "mkdir-up": "refused",
    }
    (instance,) = _instance_dirs(rt)
    root = rt.sandbox.scratch_root.path
    assert root is not None and not (root / "escaped").exists() and not (instance.parent / "escaped").exists()


def test_ephemeral_storage_mb_is_a_manifest_key_with_lambdas_range(tmp_path):
    (tmp_path / "f.c").write_text("int x;\n")
    manifest = tmp_path / "edgefn.toml"
    manifest.write_text('[functions.f]\nsource = "f.c"\nephemeral_storage_mb = 10240\n')
    assert load_manifest(manifest).functions["f"].ephemeral_storage_mb == 10_240
    manifest.write_text('[functions.f]\nsource = "f.c"\n')
    assert load_manifest(manifest).functions["f"].ephemeral_storage_mb == 512
    manifest.write_text('[functions.f]\nsource = "f.c"\nephemeral_storage_mb = 10241\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.key == "functions.f.ephemeral_storage_mb"
