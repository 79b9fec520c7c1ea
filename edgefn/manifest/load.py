"""Read edgefn.toml into the typed tables of schema.py, refusing unknown keys and bad values."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from ..core.exceptions import ManifestError
from .schema import FUNCTION_NAME, REQUIRED, BehaviorConfig, Manifest


def load_manifest(path: Path | str) -> Manifest:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(path, "", "no such file", "create it, or pass --config PATH") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, "", f"not valid TOML: {exc}", "fix the syntax at that line") from None
    manifest = parse_table(Manifest, doc, "", path)
    assert isinstance(manifest, Manifest)
    _check_cross_references(manifest, path)
    return manifest


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is dict:
        return "a table"
    if origin is list:
        return "an array"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str, file: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value, key, file)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ManifestError(file, key, f"expected a table, got {value!r}", f"write [{key}] or {key} = {{ ... }}")
        return parse_table(tp, value, key, file)  # type: ignore[arg-type]  # tp is a dataclass type here; mypy cannot narrow Any to it
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ManifestError(file, key, f"expected a table, got {value!r}", f"write [{key}] or {key} = {{ ... }}")
        return {k: _convert(val_tp, v, f"{key}.{k}", file) for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ManifestError(file, key, f"expected an array, got {value!r}", f"write [[{key}]] tables")
        return [_convert(item_tp, v, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML writes 60 for 60.0
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise ManifestError(file, key, f"expected {_type_name(tp)}, got {value!r}", f"set {key} to {_type_name(tp)}")
    return value


def parse_table(cls: type, doc: dict[str, Any], prefix: str, file: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in doc:
        if key not in fields:
            path = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ManifestError(file, path, "unknown key", f"{hint}allowed keys here: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name not in doc:
            if f.default is REQUIRED:
                raise ManifestError(file, path, "is required", f"add {path} = ... ({f.metadata.get('help', '')})")
            continue
        value = _convert(hints[name], doc[name], path, file)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            allowed = check(value)
            if allowed is not None:
                raise ManifestError(file, path, f"bad value {value!r}", f"use {allowed}")
        values[name] = value
    return cls(**values)


HOOKS = ("viewer_request", "origin_request", "origin_response", "viewer_response")


def _check_behavior(b: BehaviorConfig, key: str, manifest: Manifest, file: Path) -> None:
    if (b.function is None) == (b.origin is None):
        raise ManifestError(file, key, "needs exactly one target", "set either function = \"NAME\" or origin = \"http://...\"")
    if b.function is not None:
        _check_ref(b.function, f"{key}.function", manifest, file)
    for hook in HOOKS:
        cfg = getattr(b, hook)
        if cfg is not None:
            _check_ref(cfg.function, f"{key}.{hook}.function", manifest, file)


def _check_ref(ref: str, key: str, manifest: Manifest, file: Path) -> None:
    """A reference names a function of this manifest; its version or alias is checked against the registry at start."""
    name = ref.partition(":")[0]
    if name not in manifest.functions:
        raise ManifestError(file, key, f"unknown function {name!r}", _known(manifest))


def _known(manifest: Manifest) -> str:
    names = ", ".join(sorted(manifest.functions)) or "none yet"
    return f"declare it under [functions.NAME] (declared: {names})"


def _check_event_sources(manifest: Manifest, file: Path) -> None:
    """What one [[event_sources]] entry needs besides its keys' own forms: the keys of its broker's kind."""
    for i, e in enumerate(manifest.event_sources):
        key = f"event_sources[{i}]"
        _check_ref(e.function, f"{key}.function", manifest, file)
        if e.source.startswith("amqp"):
            if e.queue is None:
                raise ManifestError(file, f"{key}.queue", "is required for an amqp:// source", 'add queue = "orders" (the RabbitMQ queue to consume)')
            if e.streams:
                raise ManifestError(file, f"{key}.streams", "is for redis:// sources", "remove it, or point source at a redis:// URL")
        else:
            if not e.streams:
                raise ManifestError(file, f"{key}.streams", "is required for a redis:// source", 'add streams = ["clicks"] (the Redis stream keys, one shard each)')
            if e.queue is not None:
                raise ManifestError(file, f"{key}.queue", "is for amqp:// sources", "remove it, or point source at an amqp:// URL")
            if len(set(e.streams)) != len(e.streams) or not all(e.streams):
                raise ManifestError(file, f"{key}.streams", "has an empty or repeated stream key", "name each stream once")
        if 0 <= e.maximum_record_age_s < 60:
            raise ManifestError(file, f"{key}.maximum_record_age_s", f"bad value {e.maximum_record_age_s}", "use -1 (no limit) or 60 to 604,800 seconds")
        if e.on_failure.startswith("function:"):
            _check_ref(e.on_failure.removeprefix("function:"), f"{key}.on_failure", manifest, file)


def _check_cross_references(manifest: Manifest, file: Path) -> None:
    for name in manifest.functions:
        if FUNCTION_NAME(name) is not None:
            raise ManifestError(file, f"functions.{name}", "bad function name", f"use {FUNCTION_NAME(name)}")
    seen: dict[tuple[str, str], int] = {}
    for i, b in enumerate(manifest.behaviors):
        key = f"behaviors[{i}]"
        if b.path_pattern is None:
            raise ManifestError(file, f"{key}.path_pattern", "is required", "add path_pattern = \"/images/*\" (or move it to [default_behavior])")
        ident = (b.host_pattern, b.path_pattern)
        if ident in seen:
            raise ManifestError(
                file, key, f"duplicates behaviors[{seen[ident]}] (host {b.host_pattern!r}, path {b.path_pattern!r})",
                "remove one of them or change its pattern",
            )
        seen[ident] = i
        _check_behavior(b, key, manifest, file)
    if manifest.default_behavior is not None:
        if manifest.default_behavior.path_pattern is not None:
            raise ManifestError(file, "default_behavior.path_pattern", "is not allowed", "the default behavior serves every path no other behavior matches; remove it")
        _check_behavior(manifest.default_behavior, "default_behavior", manifest, file)
    elif manifest.behaviors:
        raise ManifestError(file, "default_behavior", "is required when behaviors are declared", "add [default_behavior] with a function or an origin")
    for name, schedule in manifest.schedules.items():
        if FUNCTION_NAME(name) is not None:
            raise ManifestError(file, f"schedules.{name}", "bad schedule name", f"use {FUNCTION_NAME(name)}")
        _check_ref(schedule.function, f"schedules.{name}.function", manifest, file)
    _check_event_sources(manifest, file)
    if manifest.queue.throttle_backoff_max_s < manifest.queue.throttle_backoff_min_s:
        raise ManifestError(file, "queue.throttle_backoff_max_s", "is below queue.throttle_backoff_min_s", "raise it, or lower throttle_backoff_min_s")
    for name, cfg in manifest.functions.items():
        for ns in cfg.kv:
            if ns not in manifest.kv.namespaces:
                declared = ", ".join(repr(n) for n in manifest.kv.namespaces) or "none yet"
                raise ManifestError(
                    file, f"functions.{name}.kv", f"namespace {ns!r} is not declared (declared: {declared})",
                    f"add it to [kv] namespaces = [\"{ns}\", ...], or remove it from the function's kv",
                )
        if cfg.async_invoke is not None and cfg.async_invoke.on_success == "dlq":
            raise ManifestError(
                file, f"functions.{name}.async_invoke.on_success", "the dead-letter store keeps failed events (edgefn dlq replay runs them again)",
                "send success records to a function: or http(s):// destination, or leave on_success unset",
            )
        dest_keys = ("on_success", "on_failure")
        for dest_key in dest_keys:
            dest = getattr(cfg.async_invoke, dest_key, None) if cfg.async_invoke else None
            if dest and dest.startswith("function:"):
                _check_ref(dest.removeprefix("function:"), f"functions.{name}.async_invoke.{dest_key}", manifest, file)
