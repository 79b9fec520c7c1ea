"""Layers as a build sees them: a directory packaged to publish, its content unpacked by digest into the cache,
and a function's `layers = ["name:N"]` found through the app's index of what was fetched (docs/layers.md).

A Python layer is a directory of pure-Python packages, published as a deterministic zip (sorted entries, fixed
times: the same files are the same digest). A build of a function that lists it puts the unpacked directory on
the function's import path, so the component holds the layer's code: the function's version pins its layers.
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

__all__ = ["INDEX_NAME", "LAYER_KINDS", "LAYER_REF", "LocalLayer", "layer_dir", "local_layers", "package_layer", "record_layers", "unpack_layer"]

LAYER_KINDS = ("python",)
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


def package_layer(path: Path) -> tuple[str, bytes]:
    """(kind, content) of what `edgefn layer publish NAME PATH` stores. Raises LayerError naming what PATH must be."""
    if not path.exists():
        raise LayerError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise LayerError(f"{path}: a layer is a directory of pure-Python packages (what goes on a Python function's import path)")
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
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for name in z.namelist():
                target = (stage / name).resolve()
                if not target.is_relative_to(stage.resolve()):
                    raise LayerError(f"layer content {digest[:12]} holds a path outside itself: {name!r}")
            z.extractall(stage)
        try:
            os.rename(stage, dest)
        except OSError:  # another process unpacked it first
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


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
