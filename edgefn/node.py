"""One edge node process: the runtime, the registry and its live catalog, the cache and the edge pipeline.

The Starlette lifespan (edgefn.app) opens an EdgeNode and closes it; everything a server process runs
in the background (the registry watch, the dev reloader) starts and stops here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

from starlette.applications import Starlette

from . import __version__
from .admin.listener import AdminBind, AdminListener
from .app_build import LOCKED_APP_ENV, load_app, read_locked_app
from .control.async_invoke import AsyncInvoker
from .control.catalog import POLL_INTERVAL_S, ControlOutage, FunctionCatalog, LiveCatalog, LocalSnapshot, PendingBuilds, wait_any
from .control.deploy import behaviors_of, check_references, deploy
from .control.event_sources import EventSourcePollers
from .control.schedules import Scheduler, parse_schedules
from .control.secrets import SecretBox
from .control.store import open_control_store, open_kv_of
from .core.app import FunctionSpec, ResolvedApp
from .core.events import Event
from .core.exceptions import EdgefnError, InvalidModule, StorageError
from .core.lazy import Lazy
from .core.records import LATEST, FunctionRef, NodeRecord
from .dev.console import DevConsole
from .dev.recorder import EventRecorder
from .dev.reloader import DevReloader, DevState
from .edge.app import EdgeApp, EdgeState, create_edge_app
from .edge.cache import EdgeCache
from .edge.http1 import Http1Listener, bind_from_env
from .edge.pipeline import EdgePipeline
from .observability.logs import FunctionLogSink
from .observability.metrics import EdgeMetrics
from .observability.tracing import open_tracer
from .runtime.concurrency import (
    check_reservations,
    provisioned_versions,
    reservations_of,
)
from .runtime.invoker import Invocation, Runtime

log = logging.getLogger("edgefn.node")

if TYPE_CHECKING:
    import httpx


def _origin_client() -> httpx.AsyncClient:
    """The client of HTTP origins: an origin sees the viewer's headers, not httpx's defaults (an
    Accept-Encoding: gzip the viewer never sent)."""
    import httpx  # here: an app whose origins are functions never imports it (core/lazy.py)

    client = httpx.AsyncClient(http2=True, timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)
    for default in list(client.headers):
        del client.headers[default]
    return client

#: where this node listens for viewers, as `serve` says it (EDGEFN_NODE_ADDRESS): shown by `edgefn nodes list`
NODE_ADDRESS_ENV = "EDGEFN_NODE_ADDRESS"
#: how often a node tells the control plane it is alive, and what it serves
HEARTBEAT_S = 1.0
#: with a change feed (PostgreSQL's LISTEN) the poll is only the fallback
FEED_POLL_INTERVAL_S = 1.0


class EdgeNode:
    """Serve a locked app that `edgefn serve` built and deployed: load its code, follow the registry's catalog.

    A server process never reads the manifest: the parent resolved it once (edgefn/server.py)."""

    def __init__(self, app: ResolvedApp, dev: bool = False, recorder: EventRecorder | None = None) -> None:
        self.app = app
        self.dev = dev
        self.recorder = recorder
        self.store = open_control_store(app.control_location, app.queue.idempotency_window_s)
        self.registry = self.store.registry
        #: one notice per outage of the control plane, whichever loop sees it first
        self.outage = ControlOutage()
        #: set from the change feed's thread when another node commits (PostgreSQL), or never (SQLite: polled)
        self._wakes = {topic: asyncio.Event() for topic in ("registry", "purges")}
        #: this process's Prometheus series, and every function's log stream on disk (docs/observability.md)
        self.metrics = EdgeMetrics()
        # the key-value store of the app's [kv], when it declares a namespace (the runtime closes it)
        self.runtime = Runtime(app.store_dir, workers=app.server.guest_threads or None, observer=self.metrics, kv=open_kv_of(app.kv))
        self.metrics.watch_throttles(lambda: self.runtime.invoker.limiter.snapshot()["throttled"])
        self.logs = FunctionLogSink.from_settings(app.logs).start()
        #: spans, exported over OTLP when [tracing] asks (docs/tracing.md); contexts propagate either way
        self.tracer = open_tracer(app.tracing, __version__)
        self.runtime.invoker.tracer = self.tracer
        self.tasks: list[asyncio.Task[None]] = []
        self.stop_event = asyncio.Event()
        try:
            self.runtime.start(prepare_fetch=any(fn.allowed_hosts for fn in app.functions.values()))
            load_app(app, self.runtime.store)  # the code `serve` put in the module store, precompiled: loaded, never rebuilt
            pending = PendingBuilds(app.pending_file, app.pending) if app.pending else None
            unseal = SecretBox(app.secrets_key_file).open
            self.catalog = LiveCatalog(
                self.registry, prepare=self._prepare, pending=pending, applied=self._applied, unseal=unseal, local=LocalSnapshot.of(app), outage=self.outage,
            )
            self.app = self._routed(app, self.catalog.current)
            for name in app.functions:  # prewarm = N: from the registry's $LATEST, which carries the function's secrets
                if (spec := self.catalog.current.specs.get((name, LATEST))) is not None:
                    self.runtime.invoker.prewarm(spec)
            if pending is not None:
                pending.refresh()  # some may have been deployed while this process started
            check_references(self.app, self.catalog.current)
            self._fetch_code(self.catalog.current)
            schedules = parse_schedules(app.schedules, app.manifest_path)
            self._check_limits(self.catalog.current)
            self._precompile(self.catalog.current)
            self._provision(self.catalog.current)
            self._apply_limits(self.catalog.current)
        except BaseException:
            self.runtime.close()
            self.tracer.close()
            self.logs.close()
            raise
        #: the HTTP origins' client, made at the first request to one (core/lazy.py)
        self.client: Lazy[httpx.AsyncClient] = Lazy(_origin_client)
        self.cache = EdgeCache(self.app.server.cache_max_bytes)
        self.purges = self.store.purges  # NodeServices: the admin API logs purges here
        self.event_source_mappings = self.store.event_sources  # NodeServices: the admin API's event source switches
        self.kv, self.kv_namespaces = self.runtime.invoker.kv, app.kv.namespaces  # NodeServices: the admin API's kv routes
        self.pipeline = self._pipeline(self.app)
        self.metrics.watch_async_queue(self.store.queue.stats)
        self.async_invoker = AsyncInvoker(self.store.queue, self.catalog, self.runtime.invoker, app.queue)
        self.async_invoker.tracer = self.tracer
        self.scheduler = Scheduler(self.store.schedules, schedules)
        self.scheduler.outage = self.outage
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns() % 10**9:09d}"
        self.event_sources = EventSourcePollers(app.event_sources, self.store.event_sources, self.catalog, self.runtime.invoker, self.node_id)
        self.event_sources.tracer = self.tracer
        self.started_at = time.time()

    def _pipeline(self, app: ResolvedApp) -> EdgePipeline:
        pipeline = EdgePipeline(
            app, self.catalog, self.runtime.invoker, self.client, self.cache, dev=self.dev, recorder=self.recorder, observer=self.metrics,
        )
        pipeline.tracer = self.tracer
        return pipeline

    # --- the catalog ----------------------------------------------------------------------------------

    def _reachable(self, catalog: FunctionCatalog) -> list[tuple[str, str]]:
        """(name, version) of everything a bare name or an alias can run: loaded before the catalog serves."""
        keys = {(name, LATEST) for name, _ in catalog.specs}
        for (name, alias) in catalog.aliases:
            keys.update((name, v) for v in catalog.versions_of(FunctionRef(name, alias)))
        return sorted(keys)

    def _routed(self, app: ResolvedApp, catalog: FunctionCatalog) -> ResolvedApp:
        """`app` with the behaviors of its last deploy (the registry's app document), the locked app's without one."""
        document = catalog.apps.get(app.name)
        return dataclasses.replace(app, behaviors=behaviors_of(document)) if document is not None else app

    def _fetch_code(self, catalog: FunctionCatalog) -> None:
        """Code this node's module store lacks comes from the control plane's code store, verified by its hash."""
        for key in self._reachable(catalog):
            spec = catalog.specs[key]
            if self.runtime.store.has(spec.digest):
                continue
            data = self.store.code.get(spec.digest)
            if data is None:
                raise InvalidModule(spec.name, f"code {spec.digest[:12]} is in neither this node's module store nor the control plane's; deploy it again")
            self.runtime.store.add_fetched(spec.digest, data, spec.name)
            log.info("code %s of %s fetched from the control plane (%d bytes)", spec.digest[:12], spec.qualified_name, len(data))

    def _precompile(self, catalog: FunctionCatalog) -> None:
        for key in self._reachable(catalog):
            spec = catalog.specs[key]
            self.runtime.store.load(spec.digest, spec.name)

    def _check_limits(self, catalog: FunctionCatalog) -> None:
        """Reservations must leave part of server.max_concurrency unreserved (ConcurrencyConfigError names them)."""
        check_reservations(self.app.server.max_concurrency, reservations_of(catalog.specs.values()))

    def _apply_limits(self, catalog: FunctionCatalog) -> None:
        self.runtime.invoker.limiter.configure(self.app.server.max_concurrency, reservations_of(catalog.specs.values()))
        # guest slots are shared fairly once there is more than one function to share them between
        self.runtime.invoker.scheduler.serving(len({name for name, _ in catalog.specs}))

    def _provision(self, catalog: FunctionCatalog) -> None:
        """Provisioned concurrency: keep N initialised instances of each version (and alias) that has a setting."""
        for (name, version), count in provisioned_versions(catalog.provisioned, catalog.aliases).items():
            spec = catalog.specs.get((name, version))
            if spec is None:
                continue
            if not spec.reuse_instances:
                log.warning(
                    "provisioned concurrency %d on %s is not used: version %s of %r runs a fresh instance per request; "
                    "set reuse_instances = true for it and publish a new version", count, spec.qualified_name, version, name,
                )
                continue
            ready = self.runtime.invoker.prewarm(dataclasses.replace(spec, prewarm=count))
            log.info("provisioned concurrency: %d of %d instances of %s initialised", ready, count, spec.qualified_name)

    async def _prepare(self, catalog: FunctionCatalog) -> None:
        """A new registry revision: its code is precompiled before it serves, so a flip never waits on a compile."""
        self._check_limits(catalog)  # a rejected revision is not applied: the last good catalog keeps serving
        routed = self._routed(self.app, catalog)
        if routed.behaviors != self.app.behaviors:
            check_references(routed, catalog)  # a route to nothing is refused with its key, never served
        await asyncio.to_thread(self._fetch_code, catalog)
        await asyncio.to_thread(self._precompile, catalog)
        await asyncio.to_thread(self._provision, catalog)
        self._apply_limits(catalog)
        # warm instances of versions nothing routes to any more would stay in memory for the life of the process
        keep = {f"{name}:{version}" for name, version in self._reachable(catalog)}
        keep |= {f"{name}:{version}" for name, version in provisioned_versions(catalog.provisioned, catalog.aliases)}
        if dropped := self.runtime.invoker.pools.retain(keep):
            log.info("warm instances released: %s (no longer routed to)", ", ".join(dropped))

    def _applied(self, old: FunctionCatalog, new: FunctionCatalog) -> None:
        """A registry revision now serves: new routes with it, and cached responses made by functions it changed
        are dropped."""
        routed = self._routed(self.app, new)
        if routed.behaviors != self.app.behaviors:
            self.app = routed
            self.pipeline = self._pipeline(routed)  # a request keeps the pipeline it started on
            log.info("routes of %s changed: %d behaviors now served (revision %d)", routed.name, len(routed.behaviors), new.revision)
        changed = old.changed_functions(new)
        if changed and (dropped := self.cache.drop_made_by(changed)):
            log.info("cache: %d responses made by %s dropped (their code or configuration changed)", dropped, ", ".join(sorted(changed)))

    async def _follow_purges(self, stop: asyncio.Event) -> None:
        """Apply every cache purge logged in the control database to this process's cache, as the registry's changes
        are followed (one read per poll interval); those before this process started found its cache empty."""
        purges = self.purges
        last: int | None = None
        wake = self._wakes["purges"]
        while not stop.is_set():
            wake.clear()
            try:
                if last is None:
                    last = await asyncio.to_thread(purges.last_id)
                for purge in await asyncio.to_thread(purges.since, last):
                    dropped = self.cache.purge(purge.kind, purge.value)
                    last = purge.id
                    lag_ms = max(0.0, time.time() - purge.created_at) * 1000
                    log.info("cache purge %d (%s %s): %d responses dropped, %.0f ms after it was asked", purge.id, purge.kind, purge.value or "*", dropped, lag_ms)
            except StorageError as exc:
                self.outage.failed(exc)
            except (EdgefnError, OSError) as exc:
                log.error("cache purges not read, retrying: %s", exc)
            await wait_any(stop, wake, self._poll_s)

    @property
    def _poll_s(self) -> float:
        return FEED_POLL_INTERVAL_S if self.store.changes is not None else POLL_INTERVAL_S

    def _node_record(self) -> NodeRecord:
        catalog = self.catalog.current
        return NodeRecord(
            self.node_id, self.app.name, os.environ.get(NODE_ADDRESS_ENV, f"{self.app.server.host}:{self.app.server.port}"), socket.gethostname(),
            os.getpid(), catalog.revision, tuple(f"{n}:{v}" for n, v in self._reachable(catalog)), self.started_at, time.time(),
        )

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Tell the control plane this node is alive and what it serves (`edgefn nodes list`), every HEARTBEAT_S."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.store.nodes.heartbeat, self._node_record())
            except StorageError as exc:
                self.outage.failed(exc)
            except (EdgefnError, OSError) as exc:
                log.error("heartbeat not written, retrying: %s", exc)
            await wait_any(stop, None, HEARTBEAT_S)

    def _listen(self) -> None:
        """Wake the loops that follow the control plane when the change feed hears a commit (PostgreSQL)."""
        if self.store.changes is None:
            return
        loop = asyncio.get_running_loop()
        targets = {**self._wakes, "queue": self.async_invoker.wake}

        def heard(topic: str) -> None:
            event = targets.get(topic)
            if event is not None:
                loop.call_soon_threadsafe(event.set)

        self.store.changes.subscribe(heard)

    @property
    def max_concurrency(self) -> int:
        return self.app.server.max_concurrency

    async def invoke(self, fn: FunctionSpec, event: Event) -> Invocation:
        """One invocation on this node's runtime (the admin API's synchronous Invoke)."""
        return await self.runtime.invoker.invoke(fn, event)

    def stats(self) -> dict[str, object]:
        """Concurrency limits and use, warm/cold invocations per version (GET /_edgefn/info)."""
        return self.runtime.invoker.stats()

    def serving(self) -> dict[str, FunctionSpec]:
        """Each function's $LATEST in the current catalog (GET /_edgefn/info)."""
        return {name: spec for (name, version), spec in sorted(self.catalog.current.specs.items()) if version == LATEST}

    def building(self) -> list[str]:
        """Functions whose code `serve` is still building (GET /_edgefn/health: 503 until none)."""
        return self.catalog.building()

    # --- lifecycle ------------------------------------------------------------------------------------

    async def apply(self, app: ResolvedApp) -> None:
        """A rebuilt app (dev reload): deploy it as $LATEST, refresh the catalog, then swap the pipeline."""
        await asyncio.to_thread(deploy, app, self.store, self.runtime.store.read_wasm)
        await self.catalog.refresh()
        check_references(app, self.catalog.current)
        self.scheduler.schedules = parse_schedules(app.schedules, app.manifest_path)
        self.cache.clear()  # entries made by the old code must not outlive it
        self.app = app
        self.pipeline = self._pipeline(app)

    def start(self) -> None:
        # the admin/invoke API, when `edgefn serve` asked for it (docs/admin-api.md); it binds first: a taken port fails the start
        admin = AdminBind.from_env()
        if admin is not None:
            try:
                self.tasks.append(AdminListener(self, admin).start())
            except BaseException:  # nothing else has started: release what __init__ opened, or the process hangs
                self.runtime.close()
                self.tracer.close()
                self.logs.close()
                raise
        self._listen()
        self.tasks.append(asyncio.create_task(self.catalog.watch(self.stop_event, self._poll_s, self._wakes["registry"]), name="edgefn-registry-watch"))
        self.tasks.append(asyncio.create_task(self._heartbeat(self.stop_event), name="edgefn-heartbeat"))
        self.tasks.append(asyncio.create_task(self._follow_purges(self.stop_event), name="edgefn-cache-purges"))
        self.tasks.extend(self.async_invoker.start(self.stop_event))
        self.tasks.append(asyncio.create_task(self.scheduler.run(self.stop_event), name="edgefn-scheduler"))
        self.tasks.extend(self.event_sources.start(self.stop_event))
        # what start-up made (modules, the app, the libraries) lives as long as the process: kept out of the
        # collector's full passes, which otherwise walk it every time and pause requests for tens of ms
        gc.collect()
        gc.freeze()

    async def close(self) -> None:
        self.stop_event.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        await self.async_invoker.close()
        client = self.client.peek()
        if client is not None:
            await client.aclose()
        self.runtime.close()
        self.tracer.close()  # after the runtime: the last invocations' spans are sent too
        self.logs.close()  # after the runtime: the last invocations' lines are written too
        with contextlib.suppress(EdgefnError, OSError):
            await asyncio.to_thread(self.store.nodes.leave, self.node_id)  # a clean stop leaves the list at once
        self.store.close()


def create_app(app: ResolvedApp, dev: bool = False, record_dir: Path | None = None, http1_bind: tuple[str, int] | None = None) -> EdgeApp:
    """The ASGI app of one server process: the edge app (edgefn/edge/app.py) over an EdgeNode made in
    its lifespan, with `edgefn dev`'s reloader, console and recorder when `dev` / `record_dir` ask for them,
    and the uvicorn listener of the cleartext port on `http1_bind` (`[server] http1 = "uvicorn"`)."""
    state = EdgeState()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        node = EdgeNode(app, dev=dev, recorder=EventRecorder(record_dir) if record_dir is not None else None)
        state.node = node
        node.start()
        if dev:
            dev_state, console = DevState(), DevConsole()
            state.dev, state.console = dev_state, console
            reloader = DevReloader(app.manifest_path, node.runtime, node.app, node.apply, dev_state, console)
            node.tasks.append(asyncio.create_task(reloader.run(node.stop_event)))
            console.ready(app)
        http1 = Http1Listener(edge_app, *http1_bind) if http1_bind is not None else None
        try:
            if http1 is not None:
                http1.start()  # once the node can answer: this process joins the port's group now
            yield
        finally:
            if http1 is not None:
                await http1.stop()
            await node.close()

    edge_app = create_edge_app(state, lifespan)
    return edge_app


def app_from_env() -> EdgeApp:
    """Entry point for Hypercorn worker processes: the parent passes its locked app (EDGEFN_LOCKED_APP)."""
    record = os.environ.get("EDGEFN_RECORD")
    app = read_locked_app(Path(os.environ[LOCKED_APP_ENV]))
    return create_app(app, dev=os.environ.get("EDGEFN_DEV") == "1", record_dir=Path(record) if record else None, http1_bind=bind_from_env())
