"""Compile guest sources to wasm with the pinned PyPI `ziglang` toolchain (C and Zig)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..core.exceptions import BuildError, Diagnostic

#: the C guest SDK (guest-sdk/c/edgefn.h) in a source checkout; EDGEFN_SDK_DIR overrides it
SDK_C_DIR = Path(os.environ.get("EDGEFN_SDK_DIR", Path(__file__).resolve().parents[2] / "guest-sdk" / "c"))

_DIAGNOSTIC = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<kind>error|warning|note): (?P<msg>.*)$")


def cache_dir(default_root: Path) -> Path:
    """Zig's global cache; project-owned (never ~/.cache), EDGEFN_CACHE_DIR overrides the default."""
    root = Path(os.environ.get("EDGEFN_CACHE_DIR", default_root / ".edgefn" / "cache"))
    return root / "zig"


def parse_diagnostics(output: str) -> list[Diagnostic]:
    found = []
    for line in output.splitlines():
        m = _DIAGNOSTIC.match(line.strip())
        if m:
            found.append(Diagnostic(m["file"], int(m["line"]), int(m["col"] or 0), m["kind"], m["msg"]))
    return found


def _run(cmd: list[str], source: Path, zig_cache: Path) -> None:
    zig_cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(zig_cache), ZIG_LOCAL_CACHE_DIR=str(zig_cache / "local"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=source.parent)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        raise BuildError(source, parse_diagnostics(output), output)


def zig_command() -> list[str]:
    """The pinned PyPI ziglang binary, run directly: `python -m ziglang` would add an interpreter start per build."""
    import ziglang  # type: ignore[import-untyped]  # the PyPI ziglang wheel ships no type information

    binary = Path(ziglang.__file__).parent / ("zig.exe" if sys.platform == "win32" else "zig")
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "ziglang"]


def compile_c(source: Path, out: Path, target: str, zig_cache: Path) -> None:
    triple = "wasm32-freestanding" if target == "freestanding" else "wasm32-wasi"
    cmd = [*zig_command(), "cc", f"--target={triple}", "-Oz", "-s", "-mbulk-memory", "-I", str(SDK_C_DIR)]
    if target == "freestanding":
        cmd += ["-nostdlib", "-Wl,--no-entry"]
    else:
        cmd += ["-mexec-model=reactor"]
    cmd += ["-Wl,--strip-all", "-Wall", "-Werror=implicit-function-declaration", str(source), "-o", str(out)]
    _run(cmd, source, zig_cache)


def compile_zig(source: Path, out: Path, target: str, zig_cache: Path) -> None:
    triple = "wasm32-freestanding" if target == "freestanding" else "wasm32-wasi"
    cmd = [
        *zig_command(), "build-exe", str(source), "-target", triple, "-O", "ReleaseSmall",
        "-fno-entry", "-rdynamic", "-fstrip", f"-femit-bin={out}",
    ]
    if target == "wasi":
        cmd += ["-mexec-model=reactor"]
    _run(cmd, source, zig_cache)


