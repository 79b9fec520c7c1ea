"""Compile guest sources to wasm with the pinned PyPI `ziglang` toolchain (C and Zig)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..core.exceptions import BuildError, Diagnostic
from .sdk import sdk_dir

#: the C guest SDK (edgefn.h)
SDK_C_DIR = sdk_dir("c")

_DIAGNOSTIC = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<kind>error|warning|note): (?P<msg>.*)$")


def cache_root() -> Path:
    """The one cache of toolchain outputs and built guests, whatever the app or the launch path (`make run`,
    `edgefn serve`, `edgefn dev`): $EDGEFN_CACHE_DIR, else $XDG_CACHE_HOME/edgefn, else ~/.cache/edgefn.
    `edgefn cache prune` reclaims it."""
    override = os.environ.get("EDGEFN_CACHE_DIR")
    if override:
        return Path(override).resolve()
    return (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgefn").resolve()


def cache_dir() -> Path:
    """Zig's global cache, inside cache_root()."""
    return cache_root() / "zig"


def touch(path: Path) -> None:
    """Mark a cached output used now: `edgefn cache prune` removes what was not used for a while."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune_cache(older_than_s: float, dry_run: bool = False) -> tuple[list[Path], int]:
    """Remove built guests (Python components, build records) not used for `older_than_s` seconds; returns
    what was removed and its bytes. Zig's own cache (its compiled libc, ~100 MB) is the toolchain's: kept."""
    cutoff = time.time() - older_than_s
    root = cache_root()
    doomed = [p for pattern in ("componentize-py/*.wasm", "builds/*.json") for p in sorted(root.glob(pattern)) if p.stat().st_mtime < cutoff]
    doomed += sorted(p for p in root.glob("componentize-py/edgefn-py-*") if p.is_dir())  # a build that was killed midway
    size = 0
    for path in doomed:
        if path.is_dir():
            size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        else:
            size += path.stat().st_size
            if not dry_run:
                path.unlink(missing_ok=True)
    return doomed, size


#: what a user without a language's toolchain is told to run
INSTALL_HINT = {"c": "pip install 'edgefn[c]'", "python": "pip install 'edgefn[python]'"}


def missing_toolchain(source: Path, language: str, package: str) -> BuildError:
    what = {"c": "C and Zig functions", "python": "Python functions"}[language]
    return BuildError(source, [], f"{source}: {what} need the {package} toolchain, which is not installed: {INSTALL_HINT[language]}")


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


#: most Zig files a source's directory tree may hold for its build to be recorded (beyond: always rebuilt)
MAX_ZIG_INPUTS = 512


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _record_path(cmd: list[str], zig_cache: Path) -> Path:
    import ziglang  # type: ignore[import-untyped]  # the PyPI ziglang wheel ships no type information

    key = hashlib.sha256("\0".join([getattr(ziglang, "__version__", ""), *cmd]).encode()).hexdigest()
    return zig_cache.parent / "builds" / f"{key}.json"


def _up_to_date(record: Path, out: Path) -> bool:
    """The last build of this exact command read the files `record` lists; none changed, nor its output."""
    try:
        doc = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    inputs: dict[str, str] = doc.get("inputs", {})
    fresh = bool(inputs) and doc.get("output") == _digest(out) and all(_digest(Path(p)) == h for p, h in inputs.items())
    if fresh:
        touch(record)
    return fresh


def _remember(record: Path, out: Path, inputs: list[Path]) -> None:
    digests = {str(p): _digest(p) for p in inputs}
    if any(d is None for d in digests.values()):
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"inputs": digests, "output": _digest(out)}))
    os.replace(tmp, record)


def _depfile_inputs(depfile: Path, cwd: Path) -> list[Path]:
    """The files a C build read (clang's -MD depfile), minus the toolchain's own (its version is in the key)."""
    text = depfile.read_text().replace("\\\n", " ").replace("\\ ", "\0")
    toolchain = Path(zig_command()[0]).resolve().parent
    found = []
    for word in text.partition(": ")[2].split():
        path = (cwd / word.replace("\0", " ")).resolve()
        if not path.is_relative_to(toolchain):
            found.append(path)
    return found


def _zig_inputs(source: Path) -> list[Path] | None:
    """A Zig build's inputs: every .zig file under the source's directory (None: too many to record)."""
    files = sorted(source.parent.rglob("*.zig"))
    return files if len(files) <= MAX_ZIG_INPUTS else None


def zig_command(source: Path | None = None) -> list[str]:
    """The pinned PyPI ziglang binary, run directly: `python -m ziglang` would add an interpreter start per build.
    BuildError (naming the extra to install) without it."""
    try:
        import ziglang
    except ImportError:
        raise missing_toolchain(source or Path("."), "c", "ziglang") from None

    binary = Path(ziglang.__file__).parent / ("zig.exe" if sys.platform == "win32" else "zig")
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "ziglang"]


def compile_c(source: Path, out: Path, target: str, zig_cache: Path) -> None:
    triple = "wasm32-freestanding" if target == "freestanding" else "wasm32-wasi"
    cmd = [*zig_command(source), "cc", f"--target={triple}", "-Oz", "-s", "-mbulk-memory", "-I", str(SDK_C_DIR)]
    if target == "freestanding":
        cmd += ["-nostdlib", "-Wl,--no-entry"]
    else:
        cmd += ["-mexec-model=reactor"]
    cmd += ["-Wl,--strip-all", "-Wall", "-Werror=implicit-function-declaration", str(source), "-o", str(out)]
    # unchanged inputs (the source and every header it read): the last output stands, no toolchain run
    record = _record_path(cmd, zig_cache)
    if _up_to_date(record, out):
        return
    # per process and thread: two builds of one app at once (two `serve`s started together) each read their own
    depfile = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.d")
    _run([*cmd, "-MD", "-MF", str(depfile)], source, zig_cache)
    try:
        _remember(record, out, _depfile_inputs(depfile, source.parent))
    finally:
        depfile.unlink(missing_ok=True)


def compile_zig(source: Path, out: Path, target: str, zig_cache: Path) -> None:
    triple = "wasm32-freestanding" if target == "freestanding" else "wasm32-wasi"
    cmd = [
        *zig_command(source), "build-exe", str(source), "-target", triple, "-O", "ReleaseSmall",
        "-fno-entry", "-rdynamic", "-fstrip", f"-femit-bin={out}",
    ]
    if target == "wasi":
        cmd += ["-mexec-model=reactor"]
    record = _record_path(cmd, zig_cache)
    if _up_to_date(record, out):
        return
    _run(cmd, source, zig_cache)
    if (inputs := _zig_inputs(source)) is not None:
        _remember(record, out, inputs)


