"""`pip install edgefn` from a built wheel, into a fresh venv: a tool that builds and serves C and Python
functions from outside the checkout (the SDKs and the WIT world come from the wheel, not from guest-sdk/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from edgefn.build.toolchain import cache_dir
from tests.servers import REPO, edge_server


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)], check=True, timeout=600, capture_output=True)
    wheel = next((root / "dist").glob("edgefn-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # the dependencies are this test run's own (no download): its site-packages, searched after the venv's. A
    # directory named in a .pth file has its own .pth files ignored, so the checkout's editable edgefn stays out.
    (site / "zz_edgefn_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300, capture_output=True,
    )
    return venv


def run(venv: Path, *args: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(venv / "bin" / "edgefn"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"edgefn {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def user_env(tmp_path) -> dict[str, str]:
    """A user's environment: no checkout on the path, no SDK overrides; a cache of their own (but zig's
    compiled libc, which is the toolchain's and not edgefn's, shared with the suite's to save ~20 s)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "zig").symlink_to(cache_dir(), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEFN_SDK_DIR", "EDGEFN_SDK_PY_DIR", "VIRTUAL_ENV")}
    return dict(env, EDGEFN_CACHE_DIR=str(cache), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")


def test_the_wheel_holds_the_sdks_and_edgefn_guest(venv, tmp_path, user_env):
    code = "import edgefn, edgefn_guest; from edgefn.build.sdk import SDK_ROOT; print(edgefn.__file__, edgefn_guest.__file__, SDK_ROOT, sep='\\n')"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=user_env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    assert (Path(where[2]) / "c" / "edgefn.h").is_file() and (Path(where[2]) / "python" / "wit" / "edgefn.wit").is_file()
    assert run(venv, "--version", cwd=tmp_path, env=user_env).stdout.startswith("edgefn ")


def test_an_installed_edgefn_builds_and_serves_a_c_function(venv, tmp_path, user_env):
    run(venv, "init", "app", cwd=tmp_path, env=user_env)
    out = run(venv, "invoke", "origin", "--config", "app/edgefn.toml", cwd=tmp_path, env=user_env)
    assert '"status": 200' in out.stdout and "Hello from edgefn" in out.stdout
    with edge_server(tmp_path / "app" / "edgefn.toml", tls=False, edgefn=[str(venv / "bin" / "edgefn")], cwd=tmp_path, env=user_env) as server:
        page = httpx.get(f"{server.base}/from-the-wheel")
        assert page.status_code == 200 and "/from-the-wheel" in page.text


def test_an_installed_edgefn_builds_a_python_function(venv, tmp_path, user_env):
    run(venv, "init", "pyapp", "--lang", "python", "--triggers", "viewer-request", cwd=tmp_path, env=user_env)
    out = run(venv, "invoke", "origin", "--config", "pyapp/edgefn.toml", cwd=tmp_path, env=user_env)
    assert '"status": 200' in out.stdout and "Hello from edgefn" in out.stdout
    assert any((Path(user_env["EDGEFN_CACHE_DIR"]) / "componentize-py").glob("*.wasm"))  # built here, from the wheel's WIT


def test_an_installed_edgefn_benchmarks_a_users_app(venv, tmp_path, user_env):
    run(venv, "init", "app", cwd=tmp_path, env=user_env)
    out = run(venv, "bench", "origin", "--config", "app/edgefn.toml", "--duration", "0.5s", "--concurrency", "2", "--json", "bench.json", cwd=tmp_path, env=user_env)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert set(doc["functions"]["origin"]["series"]) == {"cold_compile", "cold_artifact", "warm_fresh", "warm_reused"}
    (target,) = doc["http"]["targets"]
    assert "origin" in target["functions"] and doc["http"]["runs"][target["path"]]["2"]["requests"] > 0
    assert doc["http"]["runs"]["baseline"]["2"]["requests"] > 0 and "× baseline" in out.stdout
