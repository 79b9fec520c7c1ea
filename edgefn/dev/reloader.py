"""Hot reload for `edgefn dev`: rebuild what changed, precompile it, swap the app atomically.

In-flight requests keep the pipeline object they started with, so they finish on the old code; the next
request sees the new one. A broken build or manifest keeps the last good version serving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import watchfiles

from ..app_build import build_dev_function
from ..build.languages import LANGUAGES
from ..control.layers import fetch_manifest_layers
from ..core.app import ResolvedApp
from ..core.exceptions import EdgefnError, ManifestError
from ..manifest.load import load_manifest
from ..manifest.resolve import resolve
from ..manifest.schema import Manifest
from ..runtime.invoker import Runtime
from .console import DevConsole

SOURCE_SUFFIXES = tuple(s for lang in LANGUAGES for s in lang.watched)


@dataclass
class DevState:
    """What dev mode knows beyond the running app: the builds that are broken right now."""

    broken: dict[str, EdgefnError] = field(default_factory=dict)


def _watched(change: watchfiles.Change, path: str) -> bool:
    p = Path(path)
    if ".edgefn" in p.parts or "__pycache__" in p.parts or p.name.startswith("."):
        return False  # our own build outputs and editors' temp files
    return p.name == "edgefn.toml" or p.suffix in SOURCE_SUFFIXES or p.suffix == ".toml"


class DevReloader:
    def __init__(
        self, manifest_path: Path, runtime: Runtime, app: ResolvedApp, apply: Callable[[ResolvedApp], Awaitable[None]],
        state: DevState, console: DevConsole,
    ) -> None:
        self.manifest_path = manifest_path.resolve()
        self.runtime = runtime
        self.app = app
        self.apply = apply
        self.state = state
        self.console = console

    async def run(self, stop: asyncio.Event) -> None:
        root = self.manifest_path.parent
        async for changes in watchfiles.awatch(root, watch_filter=_watched, stop_event=stop, debounce=50, step=20):
            await self.reload({Path(p).resolve() for _, p in changes})

    def _affected(self, manifest: Manifest, changed: set[Path]) -> list[str]:
        """What to rebuild: everything after a manifest change; else the functions whose source changed,
        plus every function beside a changed file that is no function's source (a header, a helper)."""
        if self.manifest_path in changed:
            return list(manifest.functions)
        sources = {name: (self.manifest_path.parent / cfg.source).resolve() for name, cfg in manifest.functions.items()}
        shared = {p.parent for p in changed if p not in sources.values()}
        return [name for name, src in sources.items() if src in changed or src.parent in shared]

    def _build(self, manifest: Manifest, name: str) -> str:
        """Build one function as dev mode does and precompile it, off the request path; its digest."""
        fetch_manifest_layers(self.manifest_path, manifest)  # a layer version the save added
        digest = build_dev_function(self.manifest_path, manifest, name, self.runtime.store, self.runtime.sandbox)
        self.runtime.store.load(digest, name)
        return digest

    async def reload(self, changed: set[Path]) -> None:
        start = time.perf_counter()
        try:
            manifest = load_manifest(self.manifest_path)
        except ManifestError as exc:
            self.console.error(f"manifest not applied, the last good one keeps serving:\n  {exc}")
            return
        rebuild = self._affected(manifest, changed)
        digests = {name: spec.digest for name, spec in self.app.functions.items()}
        results = await asyncio.gather(*(asyncio.to_thread(self._build, manifest, name) for name in rebuild), return_exceptions=True)
        for name, built in zip(rebuild, results, strict=False):
            if isinstance(built, BaseException):
                if not isinstance(built, EdgefnError):
                    raise built
                self.state.broken[name] = built
                self.console.error(f"{name}: {built}")
                continue
            digests[name] = built
            self.state.broken.pop(name, None)
        missing = [n for n in manifest.functions if n not in digests]
        if missing:
            self.console.error(f"not applied: {', '.join(missing)} never built successfully; the last good app keeps serving")
            return
        for name in list(self.state.broken):
            if name not in manifest.functions:
                del self.state.broken[name]
        ok = [n for n in rebuild if n not in self.state.broken]
        if not ok and self.manifest_path not in changed:
            return  # every rebuild failed (said above) and the manifest is as it was: nothing to apply
        app = resolve(manifest, self.manifest_path, {n: digests[n] for n in manifest.functions})
        try:
            await self.apply(app)
        except EdgefnError as exc:
            self.console.error(f"not applied, the last good app keeps serving:\n  {exc}")
            return
        self.app = app
        what = ", ".join(ok) if ok else "manifest"
        self.console.info(f"reloaded {what} in {(time.perf_counter() - start) * 1000:.0f} ms")
