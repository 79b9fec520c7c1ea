"""What the control-plane commands do: deploy, publish, alias, rollback, functions, concurrency.

cli.py parses the arguments and calls the `*_command` functions here; each opens the registry of a
manifest (no server needed: a running one picks the change up by polling) and prints for a person, or
JSON with `--json`. The operations below them take a Registry, so an admin API can share them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..control.catalog import FunctionCatalog
from ..control.deploy import check_references, control_store_of, deploy
from ..control.layers import fetch_manifest_layers
from ..core.exceptions import Conflict, ManifestError, NotFound, RegistryError
from ..core.ports import Registry
from ..core.records import LATEST, AliasRecord, FunctionRef, RegistrySnapshot
from ..manifest.load import load_manifest
from ..manifest.schema import Manifest
from ..runtime.concurrency import check_reservation_change

MAX_RESERVED_CONCURRENCY = 100_000  # as the manifest's functions.NAME.reserved_concurrency


# --- parsing what a user typed ------------------------------------------------------------------------


def parse_alias_ref(ref: str) -> tuple[str, str]:
    """`NAME:ALIAS` -> (name, alias); a bare name, a version or $LATEST is refused with what to type."""
    parsed = FunctionRef.parse(ref)
    if ":" not in ref or not parsed.qualifier or parsed.qualifier == LATEST:
        raise RegistryError(f"{ref!r}: name the alias as NAME:ALIAS, e.g. {parsed.name or 'fn'}:live")
    if parsed.qualifier.isdigit():
        raise RegistryError(f"{ref!r} names version {parsed.qualifier}; an alias name is not all digits (e.g. {parsed.name}:live)")
    return parsed.name, parsed.qualifier


def parse_weight(text: str) -> tuple[int, float]:
    """`--weight 2=0.1` -> (2, 0.1): the canary version and the share of invocations it gets."""
    version, sep, weight = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(version), float(weight)
    except ValueError:
        raise RegistryError(f"--weight {text!r}: use VERSION=WEIGHT with 0 < WEIGHT < 1, e.g. --weight 2=0.1") from None


def parse_reserved(text: str) -> int | None:
    """`--reserved 10` -> 10, `--reserved none` -> None (the function draws on the unreserved pool)."""
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) > MAX_RESERVED_CONCURRENCY:
        raise RegistryError(f"--reserved {text!r}: use an integer from 0 to {MAX_RESERVED_CONCURRENCY:,}, or none to remove the reservation")
    return int(text)


# --- operations on a registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackResult:
    before: AliasRecord
    after: AliasRecord


def same_routing(a: AliasRecord, b: AliasRecord) -> bool:
    return a.routing() == b.routing()


def previous_routing(history: list[AliasRecord], current: AliasRecord) -> AliasRecord | None:
    """The newest earlier routing that differs from `current` (history is oldest first, ending with current)."""
    for entry in reversed(history[:-1]):
        if not same_routing(entry, current):
            return entry
    return None


def rollback_alias(registry: Registry, name: str, alias: str, to: int | None = None) -> RollbackResult:
    """Point `alias` at its previous routing, or wholly at version `to`; Conflict if that changes nothing."""
    current = registry.get_alias(name, alias)
    if to is not None:
        target = AliasRecord(name, alias, to, description=current.description)
        if same_routing(target, current):
            raise Conflict(f"{name}:{alias} already routes every invocation to version {to}; nothing to roll back")
    else:
        earlier = previous_routing(registry.alias_history(name, alias), current)
        if earlier is None:
            raise Conflict(
                f"{name}:{alias} has no earlier routing to roll back to (it has only ever been {routing_text(current)}); "
                f"point it somewhere with: edgefn rollback {name}:{alias} --to VERSION"
            )
        target = AliasRecord(name, alias, earlier.version, earlier.extra_version, earlier.extra_weight, current.description)
    return RollbackResult(current, registry.set_alias(target))


def routing_text(alias: AliasRecord) -> str:
    """`2` for a plain alias, `2 (90%) + 3 (10%)` for a canary."""
    routing = alias.routing()
    if len(routing) == 1:
        return next(iter(routing))
    return " + ".join(f"{v} ({share * 100:g}%)" for v, share in routing.items())


def function_summaries(snap: RegistrySnapshot) -> list[dict[str, Any]]:
    """One row per function: $LATEST digest, versions, aliases with their routing, reserved concurrency."""
    rows = []
    for name in sorted(snap.functions):
        fn = snap.functions[name]
        rows.append(
            {
                "name": name,
                "latest_digest": fn.latest.digest,
                "revision_id": fn.revision_id,
                "versions": sorted(v for (n, v) in snap.versions if n == name),
                "aliases": {a: rec.routing() for (n, a), rec in sorted(snap.aliases.items()) if n == name},
                "reserved_concurrency": fn.reserved_concurrency,
                "updated_at": fn.updated_at,
            }
        )
    return rows


def function_detail(registry: Registry, ref: str) -> dict[str, Any]:
    """What `ref` (NAME, NAME:VERSION, NAME:ALIAS) names: configuration, code digest, aliases and history."""
    snap = registry.snapshot()
    parsed = FunctionRef.parse(ref)
    fn = snap.functions.get(parsed.name)
    if fn is None:
        raise NotFound(f"function {parsed.name!r} is not in the registry; deploy it first (edgefn deploy)")
    doc: dict[str, Any] = {"name": parsed.name, "qualifier": parsed.qualifier}
    if parsed.qualifier == LATEST:
        doc.update(kind="$LATEST", version=LATEST, digest=fn.latest.digest, config=fn.latest.config, revision_id=fn.revision_id)
    elif parsed.qualifier.isdigit():
        version = snap.versions.get((parsed.name, int(parsed.qualifier)))
        if version is None:
            raise NotFound(f"function {parsed.name!r} has no version {parsed.qualifier}; publish one first (edgefn publish {parsed.name})")
        doc.update(kind="version", version=str(version.version), digest=version.code.digest, config=version.code.config,
                   description=version.description, created_at=version.created_at)
    else:
        alias = snap.aliases.get((parsed.name, parsed.qualifier))
        if alias is None:
            raise NotFound(f"function {parsed.name!r} has no alias {parsed.qualifier!r}; create it with: edgefn alias set {ref} VERSION")
        primary = snap.versions[(parsed.name, alias.version)]
        doc.update(
            kind="alias", version=str(alias.version), routing=alias.routing(), digest=primary.code.digest, config=primary.code.config,
            description=alias.description, updated_at=alias.updated_at,
            history=[{"routing": h.routing(), "changed_at": h.updated_at} for h in registry.alias_history(parsed.name, parsed.qualifier)],
        )
    # the secrets that version reads, by name and generation: never a value (edgefn secret list says when each was set)
    read = parsed.qualifier if parsed.qualifier == LATEST else doc["version"]
    doc["secrets"] = {name: box.generation for name, box in sorted(snap.secrets.get((parsed.name, read), {}).items())}
    doc["reserved_concurrency"] = fn.reserved_concurrency
    doc["provisioned_concurrency"] = {q: n for (f, q), n in sorted(snap.provisioned.items()) if f == parsed.name}
    doc["versions"] = [
        {"version": v.version, "digest": v.code.digest, "description": v.description, "created_at": v.created_at}
        for (n, _), v in sorted(snap.versions.items()) if n == parsed.name
    ]
    doc["aliases"] = {a: rec.routing() for (n, a), rec in sorted(snap.aliases.items()) if n == parsed.name}
    return doc


# --- the commands -------------------------------------------------------------------------------------


def open_control(config: Path) -> tuple[Manifest, Registry]:
    """The manifest of `config` and its registry (created on first use)."""
    manifest = load_manifest(config)
    return manifest, control_store_of(config, manifest).registry


def deploy_command(config: Path, stdout: TextIO) -> int:
    """Build every function, then make them all $LATEST in one registry transaction."""
    from ..app_build import open_app

    manifest = load_manifest(config)
    fetch_manifest_layers(config, manifest)
    app, runtime = open_app(config)
    try:
        control = control_store_of(config, manifest)
        registry = control.registry
        print(f"deploying {len(app.functions)} functions to {registry.location}", file=stdout, flush=True)
        start = time.perf_counter()
        changed = deploy(app, control, runtime.store.read_wasm)
    finally:
        runtime.close()
    width = max((len(n) for n in changed), default=0)
    for name in sorted(changed):
        state = "updated" if changed[name] else "unchanged"
        print(f"{name:{width}}  $LATEST {state:9}  {app.functions[name].digest[:12]}", file=stdout)
    moved = sum(changed.values())
    print(f"deployed {len(changed)} functions ({moved} changed) in {(time.perf_counter() - start) * 1000:.0f} ms, "
          f"registry revision {registry.revision()}", file=stdout)
    try:
        check_references(app, FunctionCatalog.from_snapshot(registry.snapshot()))
    except ManifestError as exc:  # deploy is how a function gets its first version: only `serve` must refuse
        print(f"edgefn: note: `edgefn serve` will refuse to start until this is fixed: {exc}", file=sys.stderr)
    return 0


def publish_command(config: Path, name: str, description: str, stdout: TextIO) -> int:
    _, registry = open_control(config)
    version, created = registry.publish(name, description)
    if created:
        print(f"published {name}:{version.version} (code {version.code.digest[:12]})", file=stdout)
    else:
        print(f"{name}: $LATEST is unchanged since version {version.version}; no new version, {name}:{version.version} returned", file=stdout)
    return 0


def alias_set_command(config: Path, ref: str, version: int, weight: str | None, description: str | None, stdout: TextIO) -> int:
    name, alias = parse_alias_ref(ref)
    _, registry = open_control(config)
    extra_version, extra_weight = parse_weight(weight) if weight is not None else (None, 0.0)
    before = _alias_or_none(registry, name, alias)
    keep = before.description if before is not None else ""
    after = registry.set_alias(AliasRecord(name, alias, version, extra_version, extra_weight, keep if description is None else description))
    was = routing_text(before) if before is not None else "(new)"
    print(f"{name}:{alias}: {was} -> {routing_text(after)}", file=stdout)
    return 0


def alias_list_command(config: Path, name: str, as_json: bool, stdout: TextIO) -> int:
    _, registry = open_control(config)
    aliases = registry.list_aliases(name)
    if as_json:
        doc = [{"name": a.name, "routing": a.routing(), "description": a.description, "updated_at": a.updated_at} for a in aliases]
        print(json.dumps(doc, indent=2), file=stdout)
        return 0
    if not aliases:
        print(f"{name} has no aliases (create one with: edgefn alias set {name}:live VERSION)", file=stdout)
        return 0
    width = max(5, *(len(a.name) for a in aliases))
    print(f"{'ALIAS':{width}}  ROUTING", file=stdout)
    for a in aliases:
        print(f"{a.name:{width}}  {routing_text(a)}" + (f"  # {a.description}" if a.description else ""), file=stdout)
    return 0


def alias_delete_command(config: Path, ref: str, stdout: TextIO) -> int:
    name, alias = parse_alias_ref(ref)
    _, registry = open_control(config)
    registry.delete_alias(name, alias)
    print(f"deleted alias {name}:{alias}", file=stdout)
    return 0


def rollback_command(config: Path, ref: str, to: int | None, stdout: TextIO) -> int:
    name, alias = parse_alias_ref(ref)
    _, registry = open_control(config)
    done = rollback_alias(registry, name, alias, to)
    print(f"{name}:{alias}: {routing_text(done.before)} -> {routing_text(done.after)} (rolled back)", file=stdout)
    return 0


def functions_list_command(config: Path, as_json: bool, stdout: TextIO) -> int:
    _, registry = open_control(config)
    rows = function_summaries(registry.snapshot())
    if as_json:
        print(json.dumps(rows, indent=2), file=stdout)
        return 0
    if not rows:
        print(f"no functions in {registry.location} (run edgefn deploy)", file=stdout)
        return 0
    width = max(4, *(len(r["name"]) for r in rows))
    print(f"{'NAME':{width}}  {'$LATEST':12}  {'VERSIONS':10}  {'RESERVED':8}  ALIASES", file=stdout)
    for r in rows:
        versions = _version_span(r["versions"])
        reserved = "-" if r["reserved_concurrency"] is None else str(r["reserved_concurrency"])
        aliases = ", ".join(f"{a}={_routing_of(routing)}" for a, routing in r["aliases"].items()) or "-"
        print(f"{r['name']:{width}}  {r['latest_digest'][:12]}  {versions:10}  {reserved:8}  {aliases}", file=stdout)
    return 0


def functions_show_command(config: Path, ref: str, as_json: bool, stdout: TextIO) -> int:
    _, registry = open_control(config)
    doc = function_detail(registry, ref)
    if as_json:
        print(json.dumps(doc, indent=2), file=stdout)
        return 0
    title = f"{doc['name']}:{doc['qualifier']}"
    if doc["kind"] == "alias":
        title += f"  (alias -> {_routing_of(doc['routing'])})"
    print(title, file=stdout)
    print(f"  code        {doc['digest']}", file=stdout)
    if doc.get("description"):
        print(f"  description {doc['description']}", file=stdout)
    reserved = "none (unreserved pool)" if doc["reserved_concurrency"] is None else str(doc["reserved_concurrency"])
    print(f"  reserved    {reserved}", file=stdout)
    for qualifier, count in doc["provisioned_concurrency"].items():
        print(f"  provisioned {doc['name']}:{qualifier} = {count}", file=stdout)
    print("  config", file=stdout)
    for key, value in sorted(doc["config"].items()):
        print(f"    {key} = {json.dumps(value)}", file=stdout)
    secrets = ", ".join(f"{name} (generation {g})" for name, g in doc["secrets"].items())
    print(f"  secrets     {secrets or '-'}", file=stdout)
    print(f"  versions    {_version_span([v['version'] for v in doc['versions']])}", file=stdout)
    for v in doc["versions"]:
        note = f"  {v['description']}" if v["description"] else ""
        print(f"    {v['version']:>4}  {v['digest'][:12]}  {_when(v['created_at'])}{note}", file=stdout)
    aliases = ", ".join(f"{a}={_routing_of(r)}" for a, r in doc["aliases"].items())
    print(f"  aliases     {aliases or '-'}", file=stdout)
    if doc["kind"] == "alias":
        print("  history (oldest first)", file=stdout)
        for h in doc["history"]:
            print(f"    {_when(h['changed_at'])}  {_routing_of(h['routing'])}", file=stdout)
    return 0


def concurrency_command(config: Path, ref: str, reserved: str | None, provisioned: int | None, stdout: TextIO) -> int:
    parsed = FunctionRef.parse(ref)
    manifest, registry = open_control(config)
    if reserved is not None:
        if ":" in ref:
            raise RegistryError(f"{ref!r}: reserved concurrency applies to a whole function; name it without a qualifier ({parsed.name})")
        count = parse_reserved(reserved)
        current = {f.name: f.reserved_concurrency for f in registry.list_functions()}
        check_reservation_change(manifest.server.max_concurrency, current, parsed.name, count)
        registry.set_reserved_concurrency(parsed.name, count)
        print(f"{parsed.name}: reserved concurrency {'removed (unreserved pool)' if count is None else count}", file=stdout)
        return 0
    assert provisioned is not None  # cli.py requires one of the two
    if ":" not in ref:
        raise RegistryError(f"{ref!r}: provisioned concurrency applies to a published version or an alias; name one, e.g. {parsed.name}:live")
    registry.set_provisioned_concurrency(parsed.name, parsed.qualifier, provisioned)
    print(f"{ref}: provisioned concurrency {provisioned if provisioned else 'removed'}", file=stdout)
    return 0


# --- helpers ------------------------------------------------------------------------------------------


def _alias_or_none(registry: Registry, name: str, alias: str) -> AliasRecord | None:
    return next((a for a in registry.list_aliases(name) if a.name == alias), None)


def _routing_of(routing: dict[str, float]) -> str:
    if len(routing) == 1:
        return next(iter(routing))
    return "+".join(f"{v}({share * 100:g}%)" for v, share in routing.items())


def _version_span(versions: list[int]) -> str:
    if not versions:
        return "-"
    return str(versions[0]) if len(versions) == 1 else f"{versions[0]}..{versions[-1]} ({len(versions)})"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
