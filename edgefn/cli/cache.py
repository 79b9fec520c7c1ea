"""`edgefn cache dir|info|prune`: where built code lives, how big it is, and reclaiming it.

Two places hold built code: edgefn's one cache (toolchain outputs and built guests, shared by every app:
build/toolchain.py `cache_root`) and each app's module store (its deployed code and precompiled
artifacts, `[app] store_dir`). Pruning the store keeps what the app's registry can still run ($LATEST
and every version); pruning the cache keeps what was used in the last `--older-than` days.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from ..app_build import store_dir_of
from ..build.toolchain import cache_root, prune_cache
from ..control.deploy import control_store_of, has_control_plane
from ..core.exceptions import EdgefnError
from ..core.files import bytes_of
from ..core.records import purge_problem
from ..manifest.load import load_manifest
from ..runtime.invoker import Runtime

__all__ = ["cache_command"]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    units = ["KB", "MB", "GB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def cache_command(action: str, config: Path, older_than_days: float, dry_run: bool, out: TextIO) -> int:
    root = cache_root()
    if action == "dir":
        print(root, file=out)
        return 0
    manifest = load_manifest(config) if action == "info" or config.exists() else None
    if action == "info":
        print(f"cache {root}: {_size(bytes_of(root))}", file=out)
        for part in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            print(f"  {part.name:<16} {_size(bytes_of(part))}", file=out)
        assert manifest is not None
        store = store_dir_of(config, manifest)
        print(f"module store {store}: {_size(bytes_of(store))}", file=out)
        for kind in ("wasm", "artifacts", "sources"):
            print(f"  {kind:<16} {_size(bytes_of(store / kind))}", file=out)
        return 0
    verb = "would remove" if dry_run else "removed"
    removed, size = prune_cache(older_than_days * 86400, dry_run)
    print(f"cache {root}: {verb} {len(removed)} built guests unused for {older_than_days:g} days ({_size(size)})", file=out)
    if manifest is None:
        print(f"no manifest at {config}: no module store pruned (--config names one)", file=out)
        return 0
    store_dir = store_dir_of(config, manifest)
    if not has_control_plane(config, manifest):
        print(f"module store {store_dir}: kept (the app was never deployed or served: nothing says what it runs)", file=out)
        return 0
    control = control_store_of(config, manifest)
    try:
        snap = control.registry.snapshot()
        keep = {fn.latest.digest for fn in snap.functions.values()} | {v.code.digest for v in snap.versions.values()}
        if control.fleet:  # the fleet's copy of the code, in its database
            count, size = control.code.prune(keep, dry_run)
            print(f"control plane {control.registry.location}: {verb} {count} codes no version runs ({_size(size)})", file=out)
    finally:
        control.close()
    runtime = Runtime(store_dir)
    try:
        pruned = runtime.store.prune(keep, dry_run)
    finally:
        runtime.close()
    print(f"module store {store_dir}: {verb} {len(pruned.files)} files the registry no longer runs ({_size(pruned.bytes)}); "
          f"kept {len(keep)} deployed codes", file=out)
    return 0


def purge_command(config: Path, path: str | None, prefix: str | None, tag: str | None, everything: bool, out: TextIO) -> int:
    """Log a purge in the app's control database; every server process of the app applies it on its next poll."""
    if everything:
        kind, value = "all", ""
    elif tag is not None:
        kind, value = "tag", tag
    elif prefix is not None:
        kind, value = "prefix", prefix
    else:
        kind, value = "path", path or ""
    problem = purge_problem(kind, value)
    if problem is not None:
        raise EdgefnError(f"cache purge: {problem}")
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        purge = store.purges.add(kind, value)
    finally:
        store.close()
    print(f"purge {purge.id} logged ({kind} {value or '*'}): every server of {manifest.app.name} drops those responses within about a second", file=out)
    return 0
