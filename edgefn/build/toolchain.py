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
from ..core.files import remove
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
    doomed += sorted(p for p in root.glob("c-sdk/*") if (p / "edgefn-sdk.o").is_file() and (p / "edgefn-sdk.o").stat().st_mtime < cutoff)
    return doomed, remove(doomed, dry_run)


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


#: what every C build compiles with (the SDK's own object in a split build too)
def _c_flags(target: str) -> list[str]:
    triple = "wasm32-freestanding" if target == "freestanding" else "wasm32-wasi"
    return [f"--target={triple}", "-Oz", "-mbulk-memory", "-Wall", "-Werror=implicit-function-declaration"]


def compile_c(source: Path, out: Path, target: str, zig_cache: Path, split: bool = False) -> None:
    """Build one C function. `split` (`edgefn dev`): against the SDK's declarations, linked with the SDK's
    object compiled once (split_sdk); the same flags, behaviour and limits."""
    zig = zig_command(source)
    if split:
        sdk_dir_, sdk_object = split_sdk(target, zig_cache)
        cmd = [*zig, "cc", *_c_flags(target), "-s", "-DEDGEFN_SPLIT_BUILD", "-I", str(sdk_dir_)]
    else:
        cmd = [*zig, "cc", *_c_flags(target), "-s", "-I", str(SDK_C_DIR)]
    cmd += ["-nostdlib", "-Wl,--no-entry"] if target == "freestanding" else ["-mexec-model=reactor"]
    cmd += ["-Wl,--strip-all", str(source)]
    if split:
        cmd.append(str(sdk_object))
    cmd += ["-o", str(out)]
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


# --- `edgefn dev`'s C build: the SDK compiled once, the function against its declarations ------------------
#
# Nearly all of a C function's compile time is the SDK's ~1,500 lines at -Oz (a save of a 20-line function took
# ~300 ms, of which the function itself ~30). In dev the header is compiled once per SDK version, target and
# toolchain into an object, and each save compiles the function against the header's declarations alone and
# links the two: the same code at the same -Oz, minus inlining across the two files (a little more fuel).


def _past_literal(text: str, i: int) -> int:
    """If text[i] starts a string, a character constant or a comment, the index just past it; else i."""
    c = text[i]
    if c in "\"'":
        j = i + 1
        while j < len(text) and text[j] != c:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    if text.startswith("/*", i):
        return text.index("*/", i + 2) + 2
    if text.startswith("//", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    return i


def _past_block(text: str, i: int) -> int:
    """The index just past the `}` that closes the `{` at text[i]."""
    depth = 0
    while i < len(text):
        j = _past_literal(text, i)
        if j != i:
            i = j
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            return i
    raise ValueError("edgefn.h: an unbalanced block")


def _past_statement(text: str, i: int) -> int:
    """The index just past the `;` that ends the declaration starting at text[i] (initializer blocks included)."""
    while i < len(text):
        j = _past_literal(text, i)
        if j != i:
            i = j
        elif text[i] == "{":
            i = _past_block(text, i)
        elif text[i] == ";":
            return i + 1
        else:
            i += 1
    raise ValueError("edgefn.h: an unterminated declaration")


def sdk_declarations(header: str) -> str:
    """edgefn.h with every SDK function's body replaced by `;`, and the SDK's own definitions (its exports,
    tables and state) left out: what a function's own file is compiled against in a split build."""
    out: list[str] = []
    i = 0
    while i < len(header):
        end = header.find("\n", i)
        end = len(header) if end < 0 else end + 1
        line = header[i:end]
        if line.startswith("EDGEFN__FN "):
            body = header.index("{", i)
            out.append(header[i:body].rstrip() + ";")
            i = _past_block(header, body)
        elif line.startswith("__attribute__((export_name("):
            i = _past_block(header, header.index("{", i))
        elif line.startswith("static "):
            i = _past_statement(header, i)
        else:
            out.append(line)
            i = end
    return "".join(out)

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


_SPLIT_SDK_BUILD = threading.Lock()


def split_sdk(target: str, zig_cache: Path) -> tuple[Path, Path]:
    """The SDK of a split build for `target`: (a directory holding the declarations as edgefn.h, the SDK's
    object), made once per header, target and toolchain in the cache."""
    import ziglang

    header = (SDK_C_DIR / "edgefn.h").read_bytes()
    flags = _c_flags(target)
    key = hashlib.sha256("\0".join([getattr(ziglang, "__version__", ""), *flags]).encode() + b"\0" + header).hexdigest()[:32]
    where = cache_root() / "c-sdk" / key
    obj = where / "edgefn-sdk.o"
    with _SPLIT_SDK_BUILD:
        if not obj.exists():
            stage = where.with_name(f".{key}.{os.getpid()}.tmp")
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            (stage / "edgefn.h").write_text(sdk_declarations(header.decode()))
            _run([*zig_command(), "cc", *flags, "-DEDGEFN_SPLIT_BUILD", "-c", "-x", "c", str(SDK_C_DIR / "edgefn.h"), "-o", str(stage / "edgefn-sdk.o")],
                 SDK_C_DIR / "edgefn.h", zig_cache)
            try:
                os.rename(stage, where)
            except OSError:  # another process made it first
                shutil.rmtree(stage, ignore_errors=True)
    touch(obj)
    return where, obj
