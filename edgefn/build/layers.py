"""Layers as a build sees them: a directory packaged to publish, its content unpacked by digest into the cache,
and a function's `layers = ["name:N"]` found through the app's index of what was fetched (docs/layers.md).

Two kinds, one per way a function's code is put together; either way the built code holds the layer's, so a
function's version pins its layers:
- python: a directory of pure-Python packages, published as a deterministic zip (sorted entries, fixed times:
  the same files are the same digest). A Python function's build puts it on the import path.
- wasm: a core module (a .wasm, or a .c or .zig source built here) whose exports a C or Zig function imports from
  the module `layer:NAME`. The function's build links the two into one module with binaryen's wasm-merge.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..core.exceptions import LayerError
from .toolchain import cache_root

__all__ = ["INDEX_NAME", "LAYER_IMPORT_PREFIX", "LAYER_KINDS", "LAYER_REF", "WASM_LAYER_FILE", "link_wasm_layers", "LocalLayer", "layer_dir", "local_layers", "package_layer", "record_layers", "unpack_layer"]

LAYER_KINDS = ("python", "wasm")
#: the file a wasm layer's content is unpacked as
WASM_LAYER_FILE = "layer.wasm"
#: the import module a C or Zig function names a wasm layer's exports by
LAYER_IMPORT_PREFIX = "layer:"
#: a layer reference in a manifest: NAME:VERSION (a version is immutable; "latest" would not be)
LAYER_REF = re.compile(r"([a-z0-9][a-z0-9-]{0,63}):([1-9][0-9]{0,8})")
#: beside the control database: which content each reference the app's functions use was fetched as
INDEX_NAME = "layers.json"
_SKIP = frozenset({"__pycache__", ".git", ".venv", "node_modules"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class LocalLayer:
    ref: str
    kind: str
    digest: str
    path: Path


def package_layer(path: Path, zig_cache: Path | None = None) -> tuple[str, bytes]:
    """(kind, content) of what `edgefn layer publish NAME PATH` stores. Raises LayerError naming what PATH must be."""
    if not path.exists():
        raise LayerError(f"{path}: no such file or directory")
    if not path.is_dir():
        return "wasm", _wasm_layer(path, zig_cache)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _SKIP & set(p.relative_to(path).parts) and p.suffix not in (".pyc", ".so", ".pyd"))
    if not any(p.suffix == ".py" for p in files):
        raise LayerError(f"{path}: holds no .py file; a Python layer is a directory of packages or modules (e.g. PATH/mylib/__init__.py)")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(path).as_posix(), _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, p.read_bytes())
    return "python", out.getvalue()


def _wasm_layer(path: Path, zig_cache: Path | None) -> bytes:
    """A core module from a .wasm, or built from a .c (its `export_name` functions) or .zig (its `export fn`s)."""
    if path.suffix == ".wasm":
        data = path.read_bytes()
    elif path.suffix in (".c", ".zig"):
        from .toolchain import cache_dir, compile_c_layer, compile_zig_layer

        out = Path(tempfile.mkdtemp(prefix="edgefn-layer-")) / "layer.wasm"
        try:
            (compile_c_layer if path.suffix == ".c" else compile_zig_layer)(path, out, zig_cache or cache_dir())
            data = out.read_bytes()
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)
    else:
        raise LayerError(f"{path}: a layer is a directory of pure-Python packages, or a core wasm module (.wasm, or a .c or .zig source)")
    if data[:8] != b"\0asm\x01\0\0\0":
        raise LayerError(f"{path}: not a core WebAssembly module (a component or another file); a wasm layer is a core module")
    return data


def layer_dir(digest: str) -> Path:
    return cache_root() / "layers" / digest


def unpack_layer(kind: str, digest: str, data: bytes) -> Path:
    """The layer's content in the cache (unpacked once per digest; a concurrent unpack of the same one is harmless)."""
    dest = layer_dir(digest)
    if dest.is_dir():
        return dest
    if kind not in LAYER_KINDS:
        raise LayerError(f"layer content {digest[:12]} is of kind {kind!r}, which this edgefn cannot use (it knows {', '.join(LAYER_KINDS)})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=dest.parent))
    try:
        if kind == "wasm":
            (stage / WASM_LAYER_FILE).write_bytes(data)
        else:
            _unzip(data, digest, stage)
        try:
            os.rename(stage, dest)
        except OSError:  # another process unpacked it first
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


def _unzip(data: bytes, digest: str, stage: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            target = (stage / name).resolve()
            if not target.is_relative_to(stage.resolve()):
                raise LayerError(f"layer content {digest[:12]} holds a path outside itself: {name!r}")
        z.extractall(stage)


def record_layers(local_dir: Path, layers: list[LocalLayer]) -> None:
    """Note in the app's index which content each reference was fetched as (merged with what it held)."""
    index = _read(local_dir)
    index.update({layer.ref: {"kind": layer.kind, "digest": layer.digest} for layer in layers})
    local_dir.mkdir(parents=True, exist_ok=True)
    tmp = local_dir / f".{INDEX_NAME}.{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, local_dir / INDEX_NAME)


def local_layers(local_dir: Path, refs: list[str], function: str) -> list[LocalLayer]:
    """The fetched content of each of `refs` (a function's layers, in order). Raises LayerError for one not fetched."""
    index = _read(local_dir)
    found = []
    for ref in refs:
        entry = index.get(ref)
        path = layer_dir(entry["digest"]) if entry else None
        if entry is None or path is None or not path.is_dir():
            raise LayerError(f"function {function!r}: layer {ref} has not been fetched for this app; `edgefn build`, `edgefn serve` and `edgefn deploy` "
                             "fetch the manifest's layers from the control plane (edgefn layer list shows what is published)")
        found.append(LocalLayer(ref, entry["kind"], entry["digest"], path))
    return found


def _read(local_dir: Path) -> dict[str, dict[str, str]]:
    try:
        index = json.loads((local_dir / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def link_wasm_layers(wasm: bytes, layers: list[LocalLayer], source: Path) -> bytes:
    """`wasm` (a C or Zig function) with its wasm layers linked in: each `layer:NAME` import is bound to layer NAME's
    export of that name, in one module (binaryen's wasm-merge, from the pinned npm toolchain). The function's own
    exports win a name both have. Raises LayerError for an import of a layer the function does not list."""
    import subprocess

    import wasmtime

    from .js import npm_tool

    with tempfile.TemporaryDirectory(prefix="edgefn-link-") as tmp:
        fn, out = Path(tmp) / "function.wasm", Path(tmp) / "linked.wasm"
        fn.write_bytes(wasm)
        cmd = [*npm_tool("wasm-merge", source), str(fn), "function"]
        for layer in layers:
            cmd += [str(layer.path / WASM_LAYER_FILE), LAYER_IMPORT_PREFIX + layer.ref.partition(":")[0]]
        cmd += ["-o", str(out), "--skip-export-conflicts", "--all-features"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not out.exists():
            raise LayerError(f"{source}: linking its layers ({', '.join(x.ref for x in layers)}) failed: {(proc.stdout + proc.stderr).strip()[-2000:]}")
        linked = out.read_bytes()
    unbound = [f"{i.module}.{i.name}" for i in wasmtime.Module(wasmtime.Engine(), linked).imports if i.module.startswith(LAYER_IMPORT_PREFIX)]
    if unbound:
        listed = ", ".join(x.ref for x in layers)
        raise LayerError(f"{source}: imports {', '.join(unbound)}, which none of its layers ({listed}) exports: add that layer to its layers, "
                         "or check the export's name")
    return linked
