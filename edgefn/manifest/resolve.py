"""Turn an authoring manifest plus built code into the one ResolvedApp the server and CLI use."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

from ..core.app import (
    DATABASE_URL_SCHEMES,
    AdminSettings,
    CachePolicy,
    EventSourceSpec,
    FunctionSpec,
    KvSettings,
    Limits,
    LogSettings,
    QueueSettings,
    ResolvedApp,
    ResolvedBehavior,
    ResolvedHook,
    ScheduleSpec,
    ServerSettings,
    TracingSettings,
    redacted_url,
)
from .schema import BehaviorConfig, EventSourceConfig, FunctionConfig, KvConfig, Manifest

#: manifest hook key -> Lambda@Edge event type
EVENT_OF_HOOK = {
    "viewer_request": "viewer-request",
    "origin_request": "origin-request",
    "origin_response": "origin-response",
    "viewer_response": "viewer-response",
}


def source_path(manifest_path: Path, cfg: FunctionConfig) -> Path:
    return (manifest_path.parent / cfg.source).resolve()


def limits_of(cfg: FunctionConfig) -> Limits:
    return Limits(
        memory_mb=cfg.memory_mb, timeout_ms=cfg.timeout_ms, fuel=cfg.fuel or 0, ephemeral_storage_mb=cfg.ephemeral_storage_mb, max_result_bytes=cfg.max_result_bytes, kv_ops=cfg.kv_ops, kv_bytes=cfg.kv_bytes,
    )


def spec_of(
    name: str, version: str, digest: str, cfg: FunctionConfig, reserved: int | None = None, secrets: Mapping[str, str] | None = None,
) -> FunctionSpec:
    """The runtime's view of one version of a function: its code and the limits, env, grants and secrets of its config."""
    return FunctionSpec(
        name=name, digest=digest, limits=limits_of(cfg), env=dict(cfg.env), version=version,
        allowed_hosts=tuple(cfg.allowed_hosts), reuse_instances=cfg.reuse_instances, prewarm=cfg.prewarm,
        reserved_concurrency=reserved, kv_namespaces=tuple(cfg.kv), secrets=dict(secrets or {}),
    )


def _behavior(b: BehaviorConfig, is_default: bool) -> ResolvedBehavior:
    hooks = {
        event: ResolvedHook(cfg.function, cfg.include_body)
        for key, event in EVENT_OF_HOOK.items()
        if (cfg := getattr(b, key)) is not None
    }
    cache = None
    if b.cache is not None:
        c = b.cache
        cache = CachePolicy(
            min_ttl=c.min_ttl, default_ttl=c.default_ttl, max_ttl=c.max_ttl,
            query_strings=tuple(c.query_strings), headers=tuple(h.lower() for h in c.headers), cookies=tuple(c.cookies),
        )
    return ResolvedBehavior(
        path_pattern="*" if is_default else (b.path_pattern or "*"),
        host_pattern=b.host_pattern,
        function=b.function,
        origin=b.origin,
        hooks=hooks,
        is_default=is_default,
        cache=cache,
        origin_connect_timeout_s=b.origin_connect_timeout_ms / 1000,
        origin_read_timeout_s=b.origin_read_timeout_ms / 1000,
    )


def resolve(manifest: Manifest, manifest_path: Path, digests: dict[str, str]) -> ResolvedApp:
    """`digests` maps each function name to the digest of its built wasm in the module store; a function
    without one is still building (`ResolvedApp.pending`)."""
    manifest_path = manifest_path.resolve()
    root = manifest_path.parent
    for name, cfg in manifest.functions.items():
        if cfg.prewarm and not cfg.reuse_instances:
            from ..core.exceptions import ManifestError

            raise ManifestError(
                manifest_path, f"functions.{name}.prewarm", "prewarmed instances are only used by a function that reuses instances",
                "add reuse_instances = true, or remove prewarm",
            )
    functions = {name: spec_of(name, "$LATEST", digests[name], cfg) for name, cfg in manifest.functions.items() if name in digests}
    behaviors = [_behavior(b, False) for b in manifest.behaviors]
    if manifest.default_behavior is not None:
        behaviors.append(_behavior(manifest.default_behavior, True))
    q, lg = manifest.queue, manifest.logs
    return ResolvedApp(
        manifest_path=manifest_path,
        root=root,
        name=manifest.app.name,
        store_dir=(root / manifest.app.store_dir).resolve(),
        build_dir=(root / manifest.app.build_dir).resolve(),
        server=ServerSettings(**dataclasses.asdict(manifest.server)),
        admin=admin_settings(manifest, root),
        functions=functions,
        sources={name: source_path(manifest_path, cfg) for name, cfg in manifest.functions.items()},
        behaviors=behaviors,
        registry_path=(root / manifest.app.registry).resolve(),
        queue=QueueSettings(
            workers=q.workers, retry_delays_s=tuple(q.retry_delays_s), throttle_backoff_min_s=q.throttle_backoff_min_s,
            throttle_backoff_max_s=q.throttle_backoff_max_s, poll_interval_ms=q.poll_interval_ms, idempotency_window_s=q.idempotency_window_s,
        ),
        logs=LogSettings((root / lg.dir).resolve(), lg.max_file_bytes, lg.keep_files, lg.retention_days),
        schedules=schedule_specs(manifest),
        configs={name: config_record(cfg) for name, cfg in manifest.functions.items()},
        pending=tuple(name for name in manifest.functions if name not in digests),
        kv=kv_settings(manifest, root),
        secrets_key_file=secrets_key_file(manifest, root),
        control=control_url(manifest),
        event_sources=event_source_specs(manifest),
        tracing=TracingSettings(manifest.tracing.otlp_endpoint, manifest.tracing.service_name or manifest.app.name, manifest.tracing.sample_ratio),
    )


#: the environment variable that points every command and node at a fleet's control plane (`--control` sets it)
CONTROL_URL_ENV = "EDGEFN_CONTROL_URL"


def control_url(manifest: Manifest) -> str:
    """The fleet control plane's URL: $EDGEFN_CONTROL_URL, else `[app] control`; "" for the app's own SQLite file."""
    return os.environ.get(CONTROL_URL_ENV) or manifest.app.control


def kv_settings(manifest: Manifest, root: Path) -> KvSettings:
    """The [kv] table with an SQLite store's path made absolute (`root`: the manifest's folder)."""
    k = manifest.kv
    fleet = control_url(manifest)
    if k.store.startswith(DATABASE_URL_SCHEMES):
        url = k.store
    elif fleet and k.store == KvConfig.store:  # a fleet's nodes share its database for kv too, unless [kv] store says otherwise
        url = fleet
    else:
        url = str((root / k.store).resolve())
    return KvSettings(tuple(k.namespaces), url, k.cache_ttl_ms / 1000)


def secrets_key_file(manifest: Manifest, root: Path) -> Path:
    """Where the app's secrets key file is (`[app] secrets_key_file`, relative to `root`, the manifest's folder)."""
    return (root / manifest.app.secrets_key_file).resolve()


def admin_settings(manifest: Manifest, root: Path) -> AdminSettings:
    """The [admin] table with its token file made absolute (`root`: the manifest's folder)."""
    a = manifest.admin
    return AdminSettings(a.host, a.port, a.token_env, (root / a.token_file).resolve())


#: event source mappings are named by a UUID derived from what they read, so every node and every deploy agrees on it
EVENT_SOURCE_NAMESPACE = uuid.UUID("5b0e6a52-4c1c-4c59-9f7e-6d1f0e2a7c31")


def event_source_id(app: str, cfg: EventSourceConfig) -> str:
    where = cfg.queue if cfg.queue is not None else ",".join(cfg.streams)
    return str(uuid.uuid5(EVENT_SOURCE_NAMESPACE, f"{app}|{cfg.function}|{redacted_url(cfg.source)}|{where}"))


def event_source_specs(manifest: Manifest) -> tuple[EventSourceSpec, ...]:
    """The manifest's [[event_sources]] as the node polls them."""
    return tuple(
        EventSourceSpec(
            uuid=event_source_id(manifest.app.name, e), function=e.function, source=e.source, queue=e.queue, streams=tuple(e.streams),
            batch_size=e.batch_size, maximum_batching_window_s=float(e.maximum_batching_window_s), starting_position=e.starting_position,
            enabled=e.enabled, maximum_concurrency=e.maximum_concurrency, visibility_timeout_s=float(e.visibility_timeout_s),
            max_receive_count=e.max_receive_count, maximum_retry_attempts=e.maximum_retry_attempts, maximum_record_age_s=e.maximum_record_age_s,
            bisect_batch_on_function_error=e.bisect_batch_on_function_error, report_batch_item_failures=e.report_batch_item_failures,
            on_failure=e.on_failure,
        )
        for e in manifest.event_sources
    )


def schedule_specs(manifest: Manifest) -> dict[str, ScheduleSpec]:
    """The manifest's [schedules.NAME] tables as the locked app keeps them."""
    return {name: ScheduleSpec(name, s.function, s.expression, s.input, s.catch_up, s.enabled) for name, s in manifest.schedules.items()}


def config_record(cfg: FunctionConfig) -> dict[str, Any]:
    """The configuration the registry keeps for a function (every manifest key of [functions.NAME])."""
    return _without_none(dataclasses.asdict(cfg))


def _without_none(doc: dict[str, Any]) -> dict[str, Any]:
    """An unset optional key is left out, as in the manifest (TOML has no null)."""
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None}
