"""What a server invokes: function references (`name`, `name:7`, `name:live`) resolved against the registry.

`FunctionCatalog` is an immutable snapshot: every version and $LATEST as a runtime FunctionSpec, and
aliases with their weights. `LiveCatalog` holds the current snapshot and replaces it whole when the
registry's revision moves (polled), so an alias flip reaches a running server within a second; an
invocation already running finishes on the snapshot it started with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..core.app import FunctionSpec, ResolvedApp
from ..core.exceptions import EdgefnError, FunctionPending, StorageError, UnknownFunction
from ..core.files import write_atomic
from ..core.ports import Registry
from ..core.records import LATEST, AliasRecord, FunctionRef, RegistrySnapshot, SealedSecret
from ..manifest.load import parse_table
from ..manifest.resolve import spec_of
from ..manifest.schema import FunctionConfig

log = logging.getLogger("edgefn.control.catalog")

#: how often a server checks the registry's revision
POLL_INTERVAL_S = 0.2


def parse_config(doc: dict[str, Any], name: str, where: str = "configuration") -> FunctionConfig:
    """Check a configuration document with the manifest's rules; ManifestError names the bad key and the fix."""
    config = parse_table(FunctionConfig, doc, f"functions.{name}", Path(where))
    assert isinstance(config, FunctionConfig)
    return config


@dataclass(frozen=True)
class FunctionCatalog:
    """One registry snapshot, ready to resolve references."""

    revision: int
    #: (name, "$LATEST" | "7") -> the spec to run
    specs: dict[tuple[str, str], FunctionSpec]
    aliases: dict[tuple[str, str], AliasRecord]
    configs: dict[tuple[str, str], FunctionConfig]
    #: (name, "$LATEST" | "7" | alias) -> instances to keep initialised
    provisioned: dict[tuple[str, str], int]
    #: app name -> its last deploy's document (control/deploy.py: behaviors, what it deployed)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: a version reference -> its spec, resolved once (a snapshot never changes; an alias picks per call)
    _versions: dict[str, FunctionSpec] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_snapshot(cls, snap: RegistrySnapshot, unseal: Callable[[SealedSecret], str] | None = None) -> "FunctionCatalog":
        """`unseal` decrypts each version's secrets into its spec (what runs guests passes it; a catalog only
        resolving references needs none, and its specs carry no secrets)."""
        specs: dict[tuple[str, str], FunctionSpec] = {}
        configs: dict[tuple[str, str], FunctionConfig] = {}
        codes = {(name, LATEST): fn.latest for name, fn in snap.functions.items()}
        codes.update({(name, str(number)): v.code for (name, number), v in snap.versions.items()})
        for (name, version), code in codes.items():
            cfg = configs[(name, version)] = parse_config(code.config, name, "registry")  # once per version
            secrets = {secret: unseal(box) for secret, box in snap.secrets.get((name, version), {}).items()} if unseal is not None else None
            specs[(name, version)] = spec_of(name, version, code.digest, cfg, snap.functions[name].reserved_concurrency, secrets)
        return cls(snap.revision, specs, dict(snap.aliases), configs, dict(snap.provisioned), dict(snap.apps))

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.specs})

    def changed_functions(self, newer: "FunctionCatalog") -> set[str]:
        """Names whose code or configuration differs in `newer` (any version or alias): what a deploy, a publish or an
        alias flip changed, so responses those functions made may be stale (the edge cache drops them)."""
        def of(catalog: "FunctionCatalog", name: str) -> tuple[dict[str, FunctionSpec], dict[str, AliasRecord]]:
            return ({v: spec for (n, v), spec in catalog.specs.items() if n == name}, {a: rec for (n, a), rec in catalog.aliases.items() if n == name})

        return {name for name in {n for n, _ in self.specs} | {n for n, _ in newer.specs} if of(self, name) != of(newer, name)}

    def versions_of(self, ref: FunctionRef) -> list[str]:
        """The versions `ref` can run: one, or two for a weighted alias."""
        if ref.is_version:
            return [ref.qualifier] if (ref.name, ref.qualifier) in self.specs else []
        alias = self.aliases.get((ref.name, ref.qualifier))
        if alias is None:
            return []
        return [str(alias.version)] + ([str(alias.extra_version)] if alias.extra_version is not None else [])

    def check(self, ref: str) -> str | None:
        """None if `ref` resolves, else why not (for start-up validation)."""
        parsed = FunctionRef.parse(ref)
        if not any(name == parsed.name for name, _ in self.specs):
            return f"function {parsed.name!r} is not in the registry (run edgefn deploy)"
        if not self.versions_of(parsed):
            kind = "version" if parsed.is_version else "alias"
            fix = f"edgefn publish {parsed.name}" if parsed.is_version else f"edgefn alias set {parsed.name}:{parsed.qualifier} VERSION"
            return f"function {parsed.name!r} has no {kind} {parsed.qualifier!r} (create it with: {fix})"
        return None

    def select(self, ref: str, request_id: str = "", rng: Callable[[], float] = random.random) -> FunctionSpec:
        """The spec to run for one invocation of `ref`; a weighted alias picks its version at random per call."""
        spec = self._versions.get(ref)
        if spec is not None:
            return spec
        parsed = FunctionRef.parse(ref)
        if parsed.is_version:
            spec = self.specs.get((parsed.name, parsed.qualifier))
            if spec is not None and len(self._versions) < 4096:
                self._versions[ref] = spec
        else:
            alias = self.aliases.get((parsed.name, parsed.qualifier))
            spec = None
            if alias is not None:
                version = alias.version
                if alias.extra_version is not None and rng() < alias.extra_weight:
                    version = alias.extra_version
                spec = self.specs.get((parsed.name, str(version)))
        if spec is None:
            raise UnknownFunction(ref, request_id, self.check(ref) or f"{ref!r} does not resolve")
        return spec

    def config(self, ref: str) -> FunctionConfig:
        """The configuration of what `ref` names ($LATEST for a bare name; an alias's main version)."""
        parsed = FunctionRef.parse(ref)
        versions = self.versions_of(parsed)
        if not versions:
            raise UnknownFunction(ref, "", self.check(ref) or f"{ref!r} does not resolve")
        return self.configs[(parsed.name, versions[0])]


class PendingBuilds:
    """The functions `serve` is still building after it began to listen (ResolvedApp.pending), as a file it
    rewrites as each one is deployed and its server processes read when it changes. Until a name leaves it,
    $LATEST of that function is pending (FunctionPending): the registry may still hold an older build."""

    def __init__(self, path: Path, names: tuple[str, ...] = ()) -> None:
        self.path = path
        self.names: frozenset[str] = frozenset(names)
        self._seen: tuple[int, int] | None = None

    def write(self, names: list[str]) -> None:
        """`serve`'s side: the names still building (none: the file goes)."""
        self.names = frozenset(names)
        if names:
            write_atomic(self.path, json.dumps(sorted(names)).encode())
        else:
            self.path.unlink(missing_ok=True)

    def refresh(self) -> None:
        """A server process's side: reread the file if it changed (one stat when it did not)."""
        if not self.names:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.names = frozenset()
            return
        if (st.st_mtime_ns, st.st_size) != self._seen:
            self._seen = (st.st_mtime_ns, st.st_size)
            try:
                self.names = self.names & frozenset(json.loads(self.path.read_text()))
            except (OSError, ValueError):
                pass  # being replaced: the next poll reads it

    def holds(self, ref: FunctionRef) -> bool:
        return ref.name in self.names and ref.qualifier == LATEST


class LocalSnapshot:
    """The last registry snapshot a node applied, kept on its own disk (owner-only): what it serves from when the
    control plane cannot be reached as it starts (static stability, docs/fleet.md)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, app: ResolvedApp) -> "LocalSnapshot":
        """The one of `app`'s node, beside its locked app."""
        return cls(app.local_dir / "control-snapshot.pickle")

    def save(self, snap: RegistrySnapshot) -> None:
        write_atomic(self.path, pickle.dumps(snap), mode=0o600)

    def load(self) -> RegistrySnapshot | None:
        try:
            snap = pickle.loads(self.path.read_bytes())  # this node's own file, written by save()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            return None
        return snap if isinstance(snap, RegistrySnapshot) else None

    def read(self, registry: Registry) -> RegistrySnapshot:
        """The registry's snapshot (kept here), or while it cannot be read the last one kept; the StorageError
        when there is none."""
        try:
            snap = registry.snapshot()
        except StorageError as exc:
            last = self.load()
            if last is None:
                raise StorageError(f"{exc}; and this node has no snapshot of it yet ({self.path}): it cannot start until the control plane answers") from None
            age = time.time() - self.path.stat().st_mtime
            log.warning("%s: serving the last snapshot this node kept (revision %d, %.0f s old) until it answers", exc, last.revision, age)
            return last
        self.save(snap)
        return snap


class ControlOutage:
    """Says once that the control plane went away, and once that it came back, however many loops notice."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        log.error("control plane unreachable, edge traffic is served from the last known app and async submissions get 503: %s", exc)

    def ok(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            down, self.down_since = time.monotonic() - self.down_since, None
        log.warning("control plane reachable again after %.1f s: catching up", down)


class LiveCatalog:
    """The current FunctionCatalog of a server, refreshed when the registry changes."""

    def __init__(
        self, registry: Registry, prepare: Callable[[FunctionCatalog], Awaitable[None]] | None = None, pending: PendingBuilds | None = None,
        applied: Callable[[FunctionCatalog, FunctionCatalog], None] | None = None, unseal: Callable[[SealedSecret], str] | None = None,
        local: LocalSnapshot | None = None, outage: ControlOutage | None = None,
    ) -> None:
        self.registry = registry
        #: where the last applied snapshot is kept (a node), so a restart while the control plane is down still serves
        self.local = local
        self.outage = outage or ControlOutage()
        #: decrypts the secrets each version reads (control/secrets.SecretBox.open)
        self.unseal = unseal
        #: functions whose $LATEST is still building (`serve` started before their build ended)
        self.pending = pending
        #: runs on a new snapshot before it serves (precompile new code, provisioned instances)
        self.prepare = prepare
        #: runs once a new snapshot serves, with the old one (the edge cache drops what changed functions made)
        self.applied = applied
        self.current = FunctionCatalog.from_snapshot(local.read(registry) if local is not None else registry.snapshot(), unseal)
        self._refresh_lock = asyncio.Lock()
        self._refused: int | None = None  # the last revision whose catalog could not be applied

    def check(self, ref: str) -> str | None:
        """Why `ref` names nothing the current catalog holds, or None (core.ports.FunctionResolver)."""
        return self.current.check(ref)

    def select(self, ref: str, request_id: str = "") -> FunctionSpec:
        if self.pending is not None and self.pending.names and self.pending.holds(parsed := FunctionRef.parse(ref)):
            raise FunctionPending(parsed.name, request_id)
        return self.current.select(ref, request_id)

    def building(self) -> list[str]:
        """The functions still building (GET /_edgefn/health answers 503 until there are none)."""
        return sorted(self.pending.names) if self.pending is not None else []

    async def refresh(self) -> bool:
        """Load the registry if its revision moved; True if the catalog changed."""
        async with self._refresh_lock:
            revision = await asyncio.to_thread(self.registry.revision)
            if revision in (self.current.revision, self._refused):
                return False
            try:
                snap = await asyncio.to_thread(self.registry.snapshot)
                new = FunctionCatalog.from_snapshot(snap, self.unseal)
                if self.prepare is not None:
                    await self.prepare(new)
            except StorageError:
                raise  # the control plane went away meanwhile: tried again on the next poll
            except BaseException:
                self._refused = revision  # refused once, logged once: the next write to the registry is tried again
                raise
            if self.local is not None:
                await asyncio.to_thread(self.local.save, snap)
            old, self.current = self.current, new
            log.info("registry revision %d -> %d applied", old.revision, new.revision)
            if self.applied is not None:
                self.applied(old, new)
            return True

    async def watch(self, stop: asyncio.Event, interval_s: float = POLL_INTERVAL_S, wake: asyncio.Event | None = None) -> None:
        """Poll the registry until `stop` (at once when `wake` is set: a change feed heard a commit); a refused
        revision is logged and the last good catalog keeps serving."""
        while not stop.is_set():
            if wake is not None:
                wake.clear()
            try:
                await self.refresh()
                self.outage.ok()
                if self.pending is not None:  # after the registry: a function leaves it once deployed
                    self.pending.refresh()
            except StorageError as exc:
                self.outage.failed(exc)
            except (EdgefnError, OSError) as exc:
                log.error("registry change not applied, the last good catalog keeps serving: %s", exc)
            except Exception:  # a bad snapshot must not end the watch: the server would stop seeing changes
                log.exception("registry change not applied, the last good catalog keeps serving")
            await wait_any(stop, wake, interval_s)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout_s: float) -> None:
    """Until `stop` or `wake` is set, or `timeout_s` passed."""
    waits = [asyncio.ensure_future(stop.wait())] + ([asyncio.ensure_future(wake.wait())] if wake is not None else [])
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
