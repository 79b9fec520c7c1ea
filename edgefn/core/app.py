"""The locked app: everything the server, the runtime and the control plane need, resolved and checked.

`manifest/resolve.py` is the only place that makes these from an `edgefn.toml` (Spin's LockedApp): past it
nothing reads the manifest's tables. A function as the runtime runs it is a `FunctionSpec` (code by digest,
`Limits`, env, grants); a behavior is a `ResolvedBehavior` with its hooks and `CachePolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "CPU_BASELINE_MB", "DATABASE_URL_SCHEMES", "FUEL_PER_MB", "MAX_MEMORY_MB", "QUEUE_SOURCE", "STREAM_SOURCE", "EventSourceSpec", "default_fuel", "redacted_url", "CachePolicy", "FunctionSpec", "KvSettings", "Limits", "LogSettings", "QueueSettings", "ResolvedApp", "ResolvedBehavior", "ResolvedHook",
    "ScheduleSpec", "ServerSettings", "TracingSettings",
]


#: Lambda's memory range; a function's CPU follows its memory from CPU_BASELINE_MB up (docs/security.md)
MAX_MEMORY_MB = 10_240
CPU_BASELINE_MB = 128
#: the CPU budget (wasm instructions per invocation) each MB of memory_mb buys: 2,000,000,000 at 128 MB
FUEL_PER_MB = 15_625_000


def default_fuel(memory_mb: int) -> int:
    """The CPU budget of a function that sets no `fuel`: in proportion to its memory, as Lambda's CPU is
    (below 128 MB, a linear-memory cap tighter than Lambda allows, the CPU stays at 128 MB's)."""
    return max(memory_mb, CPU_BASELINE_MB) * FUEL_PER_MB


@dataclass(frozen=True)
class Limits:
    """Per-function limits. Defaults mirror Lambda@Edge viewer triggers (128 MB, 5 s). `fuel` 0 (the default)
    means the budget `memory_mb` buys (default_fuel); an explicit budget wins."""

    memory_mb: int = 128
    timeout_ms: int = 5000
    fuel: int = 0
    max_result_bytes: int = 1024 * 1024
    #: key-value operations, and bytes of keys and values read and written, per invocation (docs/kv.md)
    kv_ops: int = 1000
    kv_bytes: int = 64 * 1024 * 1024
    #: the size cap of an instance's /tmp (WASI core modules; runtime/host/scratch.py), as Lambda's ephemeral storage
    ephemeral_storage_mb: int = 512

    def __post_init__(self) -> None:
        if self.fuel <= 0:
            object.__setattr__(self, "fuel", default_fuel(self.memory_mb))

    @property
    def cpu_weight(self) -> float:
        """This function's share of the node's guest CPU against a 128 MB function's, under contention."""
        return max(self.memory_mb, CPU_BASELINE_MB) / CPU_BASELINE_MB


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the runtime runs it: code by digest, limits and env (resolved from the manifest)."""

    name: str
    digest: str
    limits: Limits = Limits()
    env: dict[str, str] = field(default_factory=dict)
    version: str = "$LATEST"
    #: hosts ("host" or "host:port") the function may reach with the fetch host call
    allowed_hosts: tuple[str, ...] = ()
    #: keep warm instances in a bounded pool between invocations (default: a fresh instance per request)
    reuse_instances: bool = False
    #: instances to create at startup for the pool (provisioned concurrency); needs reuse_instances
    prewarm: int = 0
    #: in-flight invocations reserved for (and capping) this function; None = the unreserved pool
    reserved_concurrency: int | None = None
    #: the key-value namespaces it may use (least privilege: any other is an error the guest sees)
    kv_namespaces: tuple[str, ...] = ()
    #: its secrets by name, decrypted, for the guest's env API only (never in a repr, a log or an answer)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @cached_property  # read on every invocation: merged once per spec, not per request
    def guest_env(self) -> dict[str, str]:
        """What the guest's env API reads: its env, and its secrets (a secret wins over an env entry of its name)."""
        return {**self.env, **self.secrets} if self.secrets else self.env

    @cached_property  # read several times per invocation
    def qualified_name(self) -> str:
        return f"{self.name}:{self.version}"

    @cached_property
    def instance_key(self) -> tuple[str, Limits, tuple[tuple[str, str], ...]]:
        """What a warm instance of this spec was made from (code, limits, env): a pool with another key is stale."""
        return self.digest, self.limits, tuple(sorted(self.guest_env.items()))


@dataclass(frozen=True)
class ResolvedHook:
    function: str
    include_body: bool


@dataclass(frozen=True)
class CachePolicy:
    """A behavior's cache policy: the cache-key allowlists (lowercase) and the TTL bounds in seconds."""

    min_ttl: int = 0
    default_ttl: int = 86400
    max_ttl: int = 31_536_000
    query_strings: tuple[str, ...] = ()  # ("*",) = every parameter
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedBehavior:
    path_pattern: str  # "*" for the default behavior
    host_pattern: str
    function: str | None
    origin: str | None
    hooks: dict[str, ResolvedHook] = field(default_factory=dict)  # event type -> hook
    is_default: bool = False
    cache: CachePolicy | None = None  # None: responses are not cached
    origin_connect_timeout_s: float = 5.0
    origin_read_timeout_s: float = 30.0


@dataclass(frozen=True)
class ServerSettings:
    """The `[server]` table as resolved: listeners, workers, guest threads, limits of the edge itself."""

    host: str
    port: int
    tls_port: int
    tls_cert: str | None
    tls_key: str | None
    http3: bool
    cache_max_bytes: int
    workers: int
    guest_threads: int
    max_concurrency: int
    body_idle_timeout_ms: int
    body_timeout_ms: int
    max_hops: int
    #: keep the viewer's X-Forwarded-For (edgefn behind a proxy of the operator's) and append the peer to it
    trust_forwarded_for: bool
    #: what serves the cleartext port: "hypercorn" (HTTP/1.1 and h2c) or "uvicorn" (HTTP/1.1, edge/http1.py)
    http1: str


@dataclass(frozen=True)
class AdminSettings:
    """The `[admin]` table as resolved: the admin/invoke listener and where its bearer token comes from."""

    host: str
    port: int
    #: the environment variable that holds the token, when set
    token_env: str
    #: where the token is kept otherwise (absolute): generated on first start, owner-only
    token_file: Path


@dataclass(frozen=True)
class QueueSettings:
    """The `[queue]` table as resolved: asynchronous delivery workers and backoff."""

    workers: int
    retry_delays_s: tuple[float, ...]
    throttle_backoff_min_s: float
    throttle_backoff_max_s: float
    poll_interval_ms: int
    idempotency_window_s: int


@dataclass(frozen=True)
class LogSettings:
    """The `[logs]` table as resolved: where each function's log stream goes, rotation and retention."""

    dir: Path
    max_file_bytes: int
    keep_files: int
    retention_days: int


@dataclass(frozen=True)
class ScheduleSpec:
    """One `[schedules.NAME]` table (its expression is parsed and checked by control/schedules.py)."""

    name: str
    function: str
    expression: str
    input: str
    catch_up: str
    enabled: bool


#: the two kinds of event source, by the broker URL's scheme
QUEUE_SOURCE, STREAM_SOURCE = "queue", "stream"


@dataclass(frozen=True)
class EventSourceSpec:
    """One `[[event_sources]]` entry as the node polls it (control/event_sources/, docs/event-sources.md)."""

    uuid: str
    function: str
    source: str
    queue: str | None = None
    streams: tuple[str, ...] = ()
    batch_size: int = 10
    maximum_batching_window_s: float = 0.0
    starting_position: str = "LATEST"
    enabled: bool = True
    maximum_concurrency: int = 2
    visibility_timeout_s: float = 30.0
    max_receive_count: int = 3
    maximum_retry_attempts: int = -1
    maximum_record_age_s: int = -1
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    on_failure: str = "dlq"

    @property
    def kind(self) -> str:
        return QUEUE_SOURCE if self.source.startswith("amqp") else STREAM_SOURCE

    @property
    def safe_source(self) -> str:
        """The broker URL without its password (for lists, logs and records)."""
        return redacted_url(self.source)

    @property
    def arn(self) -> str:
        """What the event documents name the source by (Lambda's eventSourceARN)."""
        where = self.queue if self.queue is not None else ",".join(self.streams)
        return f"edgefn:{'rabbitmq' if self.kind == QUEUE_SOURCE else 'redis'}:{self.safe_source}:{where}"


def redacted_url(url: str) -> str:
    """`url` with the password of its user part as ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


#: what a `[kv] store` starting with one of these names: a PostgreSQL database (anything else is an SQLite file)
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class KvSettings:
    """The `[kv]` table as resolved: the declared namespaces and the store (an absolute SQLite path or a URL)."""

    namespaces: tuple[str, ...] = ()
    store: str = ""
    #: PostgreSQL: how long a node may serve a value it read (the staleness bound)
    cache_ttl_s: float = 1.0


@dataclass(frozen=True)
class TracingSettings:
    """The `[tracing]` table: where spans are exported (None: not from the manifest), as what, how many."""

    otlp_endpoint: str | None = None
    service_name: str = ""
    sample_ratio: float = 1.0


@dataclass(frozen=True)
class ResolvedApp:
    manifest_path: Path
    root: Path
    name: str
    store_dir: Path
    build_dir: Path
    server: ServerSettings
    admin: AdminSettings
    functions: dict[str, FunctionSpec]
    sources: dict[str, Path]
    behaviors: list[ResolvedBehavior]  # ordered; the default behavior (if any) is last
    #: the control database (registry, async queue, schedules)
    registry_path: Path
    queue: QueueSettings
    logs: LogSettings
    schedules: dict[str, ScheduleSpec]
    #: each function's configuration as the registry keeps it (deployed as $LATEST with its digest)
    configs: dict[str, dict[str, Any]]
    #: functions still building when `serve` began to listen (not in `functions`): Lambda's Pending state, each
    #: deployed once built and precompiled; until then its $LATEST answers 503 (control/catalog.PendingBuilds)
    pending: tuple[str, ...] = ()
    kv: KvSettings = KvSettings()
    #: the key file secrets are sealed with when $EDGEFN_SECRETS_KEY is unset (absolute)
    secrets_key_file: Path = Path(".edgefn/secrets.key")
    #: a fleet's control plane (postgresql:// URL), or "" for the SQLite file at `registry_path`
    control: str = ""
    #: the polling event sources ([[event_sources]]), in manifest order
    event_sources: tuple[EventSourceSpec, ...] = ()
    tracing: TracingSettings = TracingSettings()

    @property
    def control_location(self) -> str | Path:
        """Where the control plane's stores live: the fleet's database, or this app's own SQLite file."""
        return self.control or self.registry_path

    @property
    def local_dir(self) -> Path:
        """This node's own state beside the module store: the locked app, the last control snapshot."""
        return self.registry_path.parent

    @property
    def pending_file(self) -> Path:
        """Where `serve` keeps the names still building, for its server processes (beside the control database)."""
        return self.registry_path.parent / "pending-builds.json"
