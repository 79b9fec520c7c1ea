"""Build every function of a manifest, add the code to the module store, and resolve the app."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..manifest.resolve import ResolvedApp, resolve, source_path
from ..manifest.schema import FunctionConfig, Manifest
from ..runtime.module_store import ModuleStore
from .toolchain import build_source, cache_dir


def store_dir_of(manifest_path: Path, manifest: Manifest) -> Path:
    return (Path(manifest_path).resolve().parent / manifest.app.store_dir).resolve()


def build_function(manifest_path: Path, manifest: Manifest, name: str) -> bytes:
    cfg: FunctionConfig = manifest.functions[name]
    root = Path(manifest_path).resolve().parent
    out = (root / manifest.app.build_dir / f"{name}.wasm").resolve()
    return build_source(source_path(manifest_path, cfg), out, cfg.target, cache_dir(root))


def build_app(manifest_path: Path, manifest: Manifest, store: ModuleStore, precompile: bool = True) -> ResolvedApp:
    """Build all functions in parallel, keep their code in `store`, precompile it, and resolve the app."""
    manifest_path = Path(manifest_path).resolve()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {name: pool.submit(build_function, manifest_path, manifest, name) for name in manifest.functions}
        wasm = {name: f.result() for name, f in futures.items()}
    digests = {name: store.add(code) for name, code in wasm.items()}
    app = resolve(manifest, manifest_path, digests)
    if precompile:
        for name, spec in app.functions.items():
            store.load(spec.digest, name)
        prewarm = getattr(store, "prewarm_hook", None)  # set by Runtime: Invoker.prewarm
        if prewarm is not None:  # warm instances at startup, for functions that ask (prewarm = N)
            for spec in app.functions.values():
                if getattr(spec, "reuse_instances", False) and getattr(spec, "prewarm", 0) > 0:
                    prewarm(spec)
    return app
