"""One edge node process: the runtime, the registry and its live catalog, the cache and the edge pipeline.

The Starlette lifespan (edgefn.app) opens an EdgeNode and closes it; everything a server process runs
in the background (the registry watch, the dev reloader) starts and stops here.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx

from .commands import open_app
from .control.catalog import FunctionCatalog, LiveCatalog
from .control.deploy import check_references, deploy, open_registry
from .control.registry import LATEST, FunctionRef
from .manifest.load import load_manifest
from .manifest.resolve import ResolvedApp
from .manifest.schema import Manifest
from .pipeline.cache import EdgeCache
from .pipeline.pipeline import EdgePipeline

log = logging.getLogger("edgefn.node")


class EdgeNode:
    """Build (or load) the app, deploy it as $LATEST, and keep the pipeline on the registry's current catalog."""

    def __init__(self, config: Path, dev: bool = False, recorder: object | None = None) -> None:
        self.config = Path(config).resolve()
        self.dev = dev
        self.recorder = recorder
        self.manifest: Manifest = load_manifest(self.config)
        self.app, self.runtime = open_app(self.config)
        self.tasks: list[asyncio.Task] = []
        self.stop_event = asyncio.Event()
        try:
            self.registry = open_registry(self.config, self.manifest)
            deploy(self.app, self.manifest, self.registry)
            self.catalog = LiveCatalog(self.registry, prepare=self._prepare)
            check_references(self.app, self.manifest, self.catalog.current)
            self._precompile(self.catalog.current)
        except BaseException:
            self.runtime.close()
            raise
        self.client = httpx.AsyncClient(http2=True, timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)
        self.cache = EdgeCache(self.app.server.cache_max_bytes)
        self.pipeline = self._pipeline(self.app)

    def _pipeline(self, app: ResolvedApp) -> EdgePipeline:
        return EdgePipeline(app, self.catalog, self.runtime.invoker, self.client, self.cache, dev=self.dev, recorder=self.recorder)  # type: ignore[arg-type]

    # --- the catalog ----------------------------------------------------------------------------------

    def _reachable(self, catalog: FunctionCatalog) -> list[tuple[str, str]]:
        """(name, version) of everything a bare name or an alias can run: loaded before the catalog serves."""
        keys = {(name, LATEST) for name, _ in catalog.specs}
        for (name, alias) in catalog.aliases:
            keys.update((name, v) for v in catalog.versions_of(FunctionRef(name, alias)))
        return sorted(keys)

    def _precompile(self, catalog: FunctionCatalog) -> None:
        for key in self._reachable(catalog):
            spec = catalog.specs[key]
            self.runtime.store.load(spec.digest, spec.name)

    async def _prepare(self, catalog: FunctionCatalog) -> None:
        """A new registry revision: its code is precompiled before it serves, so a flip never waits on a compile."""
        await asyncio.to_thread(self._precompile, catalog)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def apply(self, app: ResolvedApp, manifest: Manifest) -> None:
        """A rebuilt app (dev reload): deploy it as $LATEST, refresh the catalog, then swap the pipeline."""
        await asyncio.to_thread(deploy, app, manifest, self.registry)
        await self.catalog.refresh()
        check_references(app, manifest, self.catalog.current)
        self.cache.clear()  # entries made by the old code must not outlive it
        self.app, self.manifest = app, manifest
        self.pipeline = self._pipeline(app)

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self.catalog.watch(self.stop_event), name="edgefn-registry-watch"))

    async def close(self) -> None:
        self.stop_event.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        await self.client.aclose()
        self.runtime.close()
