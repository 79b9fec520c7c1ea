"""What each CLI command does; cli.py only parses arguments and calls these."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from ..app_build import open_app
from ..build.languages import build_source
from ..build.toolchain import cache_dir
from ..control.catalog import FunctionCatalog
from ..control.deploy import has_control_plane
from ..control.layers import fetch_manifest_layers
from ..core import events
from ..core.exceptions import EventFileError, InvocationError, ManifestError, error_document
from ..core.ids import new_request_id
from ..core.records import LATEST
from ..manifest.load import load_manifest
from ..manifest.resolve import secrets_key_file
from ..manifest.schema import Manifest
from .kv import kv_store_of


def build(config: Path, source: Path | None, out: Path | None, target: str, stdout: TextIO) -> int:
    if source is not None:
        dest = out or source.with_suffix(".wasm")
        start = time.perf_counter()
        wasm = build_source(source.resolve(), dest.resolve(), target, cache_dir())
        print(f"built {dest} ({len(wasm):,} bytes) in {(time.perf_counter() - start) * 1000:.0f} ms", file=stdout)
        return 0
    start = time.perf_counter()
    fetch_manifest_layers(config, load_manifest(config))
    app, runtime = open_app(config)
    try:
        for name, spec in app.functions.items():
            loaded, _ = runtime.store.load(spec.digest, name)
            print(f"{name:24} {spec.digest[:12]}  {loaded.artifact_bytes:>9,} bytes precompiled  ({app.sources[name].name})", file=stdout)
        print(f"built {len(app.functions)} functions into {app.store_dir} in {(time.perf_counter() - start) * 1000:.0f} ms", file=stdout)
    finally:
        runtime.close()
    return 0


def invoke(config: Path, function: str, event_file: Path | None, stdout: TextIO) -> int:
    # the user's mistakes (event file, function name) are found before the build, not after it
    _, event = read_event(event_file)
    manifest = load_manifest(config)
    if ":" not in function and function not in manifest.functions:
        raise ManifestError(config, f"functions.{function}", "no such function", f"pick one of: {', '.join(sorted(manifest.functions))}")
    catalog = _registered_catalog(config, manifest) if ":" in function or has_control_plane(config, manifest) else None
    registered = catalog.select(function, new_request_id()) if catalog is not None and ":" in function else None
    fetch_manifest_layers(config, manifest)
    app, runtime = open_app(config, workers=1, kv=kv_store_of(config, manifest))
    try:
        spec = registered or app.functions[function]
        latest = catalog.specs.get((function, LATEST)) if catalog is not None and registered is None else None
        if latest is not None and latest.secrets:  # the manifest's build, with the secrets its $LATEST reads
            spec = replace(spec, secrets=latest.secrets)
        event.config = replace(event.config, function_name=spec.name, request_id=event.config.request_id or new_request_id())
        print(f"executed version: {spec.qualified_name}", file=sys.stderr)
        try:
            done = runtime.invoker.invoke_sync(spec, event)
        except InvocationError as exc:
            print(json.dumps(error_document(exc), indent=2), file=stdout)
            return 1
        print(json.dumps(events.to_json_document(done.result), indent=2), file=stdout)
        return 0
    finally:
        runtime.close()


#: the event of an invoke without --event: GET /
DEFAULT_EVENT = b'{"request": {"uri": "/"}}'


def read_event(event_file: Path | None) -> tuple[bytes, events.Event]:
    """The event of `edgefn invoke --event FILE` (JSON, bare or in Lambda@Edge's Records envelope), as read and
    as parsed; without a file, DEFAULT_EVENT."""
    if event_file is None:
        return DEFAULT_EVENT, events.event_from_json(DEFAULT_EVENT)
    try:
        payload = event_file.read_bytes()
    except OSError as exc:
        raise EventFileError(event_file, f"cannot read it ({exc.strerror or exc})") from None
    try:
        return payload, events.event_from_json(payload)
    except events.ResultError as exc:
        raise EventFileError(event_file, str(exc)) from None


def _registered_catalog(config: Path, manifest: Manifest) -> FunctionCatalog:
    """What the registry holds, with each version's secrets (as a server runs it)."""
    from ..control.deploy import control_store_of
    from ..control.secrets import SecretBox

    registry = control_store_of(config, manifest).registry
    return FunctionCatalog.from_snapshot(registry.snapshot(), SecretBox(secrets_key_file(manifest, config.resolve().parent)).open)


def events_sample(event_type: str, stdout: TextIO) -> int:
    print(json.dumps(events.to_json_document(events.sample_event(event_type, new_request_id())), indent=2), file=stdout)
    return 0


def init(directory: Path, lang: str, triggers: list[str], stdout: TextIO) -> int:
    from ..dev.scaffold import init_project

    for path in init_project(directory, lang, triggers):
        print(f"created {path}", file=stdout)
    print(f"\nnext: cd {directory} && edgefn dev", file=stdout)
    return 0
