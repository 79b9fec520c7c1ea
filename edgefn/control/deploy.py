"""`edgefn deploy`, and what `serve` does at start: the manifest's built functions become $LATEST in the registry,
their code goes to the control plane's code store, and the app's document (its behaviors) to the registry, so
every node of a fleet serves the deploy without a restart."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

from ..core.app import CachePolicy, ResolvedApp, ResolvedBehavior, ResolvedHook
from ..core.exceptions import ManifestError
from ..core.ports import CodeStore, ControlStore
from ..core.records import LATEST, CodeAndConfig, FunctionRef
from ..manifest.resolve import control_url
from ..manifest.schema import Manifest
from .catalog import FunctionCatalog
from .store import open_control_store

log = logging.getLogger("edgefn.control.deploy")


def registry_path(manifest_path: Path, manifest: Manifest) -> Path:
    return (Path(manifest_path).resolve().parent / manifest.app.registry).resolve()


def control_location_of(manifest_path: Path, manifest: Manifest) -> str | Path:
    """Where the control plane of a manifest lives: the fleet's database ($EDGEFN_CONTROL_URL, `[app] control`),
    else the app's own SQLite file (`[app] registry`)."""
    return control_url(manifest) or registry_path(manifest_path, manifest)


def has_control_plane(manifest_path: Path, manifest: Manifest) -> bool:
    """Does the manifest have a control plane yet (a fleet's database, or its SQLite file once deployed or served)?"""
    return bool(control_url(manifest)) or registry_path(manifest_path, manifest).exists()


def control_store_of(manifest_path: Path, manifest: Manifest) -> ControlStore:
    """The control plane's storage a manifest names, as the CLI opens it."""
    return open_control_store(control_location_of(manifest_path, manifest), manifest.queue.idempotency_window_s)


# --- the app document ------------------------------------------------------------------------------------


def app_document(app: ResolvedApp) -> dict[str, Any]:
    """What a deploy says of `app` beyond its functions: its behaviors (routes), and what it deployed of each
    function (the rule by which `serve` leaves $LATEST alone, docs/fleet.md)."""
    return {
        "behaviors": [dataclasses.asdict(b) for b in app.behaviors],
        "deployed": {name: _deployed(app, name, spec.digest) for name, spec in app.functions.items()},
    }


def behaviors_of(document: dict[str, Any]) -> list[ResolvedBehavior]:
    """The behaviors an app document holds, as the pipeline routes them."""
    out = []
    for b in document.get("behaviors", []):
        hooks = {event: ResolvedHook(**h) for event, h in b.get("hooks", {}).items()}
        cache: dict[str, Any] | None = b.get("cache")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (cache or {}).items()}
        policy = CachePolicy(**fields) if cache is not None else None
        out.append(ResolvedBehavior(**{**b, "hooks": hooks, "cache": policy}))
    return out


def _deployed(app: ResolvedApp, name: str, digest: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(json.dumps({"digest": digest, "config": app.configs[name]}, sort_keys=True))
    return record


# --- deploying -------------------------------------------------------------------------------------------


def upload_code(code: CodeStore, digests: set[str], wasm_of: Callable[[str], bytes | None]) -> int:
    """Put each of `digests` the code store lacks there (read by `wasm_of`), before anything names it; how many."""
    sent = 0
    for digest in sorted(code.missing(digests)):
        data = wasm_of(digest)
        if data is None:  # a dev source bundle has no single wasm file: only this machine's nodes can serve it
            log.warning("code %s is not in the local module store as one wasm file: other nodes cannot fetch it", digest[:12])
            continue
        code.put(digest, data)
        sent += 1
    return sent


def deploy(app: ResolvedApp, control: ControlStore, wasm_of: Callable[[str], bytes | None], keep_api_changes: bool = False) -> dict[str, bool]:
    """Make every function of `app` (built: its code is in the module store) $LATEST, and the app's document its
    current one, in one transaction; the code goes to the code store first, so a node never sees a digest it
    cannot fetch (on a fleet's database; on SQLite the nodes share this machine's module store). Returns
    name -> whether $LATEST changed.

    `keep_api_changes` (`serve`'s start): a function whose code and configuration the manifest has not changed
    since its last deploy keeps the $LATEST the registry has, which the API may have changed since."""
    if control.fleet:  # one machine's nodes share its module store: the code needs no second copy
        upload_code(control.code, {spec.digest for spec in app.functions.values()}, wasm_of)
    document = app_document(app)
    registry = control.registry
    previous = (registry.get_app(app.name) or {}).get("deployed", {}) if keep_api_changes else {}
    known = {record.name for record in registry.list_functions()} if previous else set()
    items = {
        name: CodeAndConfig(spec.digest, app.configs[name])
        for name, spec in app.functions.items()
        if not (name in known and previous.get(name) == document["deployed"][name])
    }
    changed = registry.put_many(items, document=(app.name, document))
    if app.event_sources:
        control.event_sources.sync(app.name, app.event_sources)
    return {name: changed.get(name, False) for name in app.functions}


def deploy_built(app: ResolvedApp, control: ControlStore, name: str, digest: str, wasm_of: Callable[[str], bytes | None]) -> bool:
    """Make one function `serve` was still building $LATEST (its code is in the module store, precompiled)."""
    if control.fleet:
        upload_code(control.code, {digest}, wasm_of)
    document = control.registry.get_app(app.name) or app_document(app)
    document.setdefault("deployed", {})[name] = _deployed(app, name, digest)
    return control.registry.put_many({name: CodeAndConfig(digest, app.configs[name])}, document=(app.name, document))[name]


def check_references(app: ResolvedApp, catalog: FunctionCatalog, behaviors: list[ResolvedBehavior] | None = None) -> None:
    """Every version or alias the manifest (or `behaviors`, a deploy's) names must exist before a server serves it."""
    behaviors = app.behaviors if behaviors is None else behaviors
    refs = [(f"behaviors[{i}]", b) for i, b in enumerate(behaviors) if not b.is_default]
    refs += [("default_behavior", b) for b in behaviors if b.is_default]
    building = set(app.pending)  # $LATEST of these is deployed once built: not in the registry yet

    def unresolved(ref: str) -> str | None:
        parsed = FunctionRef.parse(ref)
        return None if parsed.name in building and parsed.qualifier == LATEST else catalog.check(ref)

    for key, behavior in refs:
        named = [("function", behavior.function)] + [(f"{e.replace('-', '_')}.function", h.function) for e, h in behavior.hooks.items()]
        for field, ref in named:
            if ref is not None and (problem := unresolved(ref)) is not None:
                raise ManifestError(app.manifest_path, f"{key}.{field}", problem, "publish the version or set the alias, or name the function without a qualifier ($LATEST)")
    for name, schedule in app.schedules.items():
        if (problem := unresolved(schedule.function)) is not None:
            raise ManifestError(app.manifest_path, f"schedules.{name}.function", problem, "publish the version or set the alias first")


__all__ = [
    "app_document", "behaviors_of", "check_references", "control_location_of", "control_store_of", "deploy", "deploy_built", "has_control_plane",
    "registry_path",
    "upload_code",
]
