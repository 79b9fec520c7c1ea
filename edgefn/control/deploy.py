"""`edgefn deploy`, and what `serve` does at start: the manifest's built functions become $LATEST in the registry."""

from __future__ import annotations

from pathlib import Path

from ..core.app import ResolvedApp
from ..core.exceptions import ManifestError
from ..core.ports import ControlStore, Registry
from ..core.records import LATEST, CodeAndConfig, FunctionRef
from ..manifest.schema import Manifest
from .catalog import FunctionCatalog
from .store import open_control_store


def registry_path(manifest_path: Path, manifest: Manifest) -> Path:
    return (Path(manifest_path).resolve().parent / manifest.app.registry).resolve()


def control_store_of(manifest_path: Path, manifest: Manifest) -> ControlStore:
    """The control plane's storage a manifest names (`[app] registry`), as the CLI opens it."""
    return open_control_store(registry_path(manifest_path, manifest), manifest.queue.idempotency_window_s)


def deploy(app: ResolvedApp, registry: Registry) -> dict[str, bool]:
    """Make every function of `app` (built: its code is in the module store) $LATEST, in one transaction.

    Returns name -> whether $LATEST changed. The code is in the module store before this runs, so a crash at
    any point leaves the registry at the old or the new state, each pointing at code that exists."""
    items = {name: CodeAndConfig(spec.digest, app.configs[name]) for name, spec in app.functions.items()}
    return registry.put_many(items)


def deploy_built(app: ResolvedApp, registry: Registry, name: str, digest: str) -> bool:
    """Make one function `serve` was still building $LATEST (its code is in the module store, precompiled)."""
    return registry.put_many({name: CodeAndConfig(digest, app.configs[name])})[name]


def check_references(app: ResolvedApp, catalog: FunctionCatalog) -> None:
    """Every version or alias the manifest names must exist before a server starts on it."""
    refs = [(f"behaviors[{i}]", b) for i, b in enumerate(app.behaviors) if not b.is_default]
    refs += [("default_behavior", b) for b in app.behaviors if b.is_default]
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
