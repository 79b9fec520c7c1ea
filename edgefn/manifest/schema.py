"""The authoring form of edgefn.toml: typed tables, each field with its allowed values.

Every table is a frozen data class; `metadata["check"]` validates a value and returns what is allowed
when it is not. load.py walks these classes, so a field added here is parsed, checked and documented
in error messages without further code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from ..build.languages import SOURCE_SUFFIXES
from ..build.layers import LAYER_REF
from ..core.app import DATABASE_URL_SCHEMES, MAX_MEMORY_MB
from ..core.records import KV_NAMESPACE

Check = Callable[[Any], "str | None"]  # returns None when fine, else a description of what is allowed


@dataclass(frozen=True)
class int_range:  # noqa: N801 - reads as the function it used to be: int_range(1, 64)
    """An integer from lo to hi."""

    lo: int
    hi: int

    def __call__(self, v: Any) -> str | None:
        return None if self.lo <= v <= self.hi else f"an integer from {self.lo:,} to {self.hi:,}"

    def json_schema(self) -> dict[str, Any]:
        return {"minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True)
class number_range:  # noqa: N801
    """A number from lo to hi."""

    lo: float
    hi: float

    def __call__(self, v: Any) -> str | None:
        return None if self.lo <= v <= self.hi else f"a number from {self.lo:g} to {self.hi:g}"

    def json_schema(self) -> dict[str, Any]:
        return {"minimum": self.lo, "maximum": self.hi}


class _RetryDelays:
    """One or two delays in seconds."""

    def __call__(self, delays: list[float]) -> str | None:
        if not 1 <= len(delays) <= 2 or any(not 0 <= d <= 3600 for d in delays):
            return "one or two delays in seconds, each from 0 to 3600 (the last one repeats for later retries)"
        return None

    def json_schema(self) -> dict[str, Any]:
        return {"minItems": 1, "maxItems": 2, "items": {"type": "number", "minimum": 0, "maximum": 3600}}


_delays_check = _RetryDelays()


class one_of:  # noqa: N801
    """One of the given strings."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, v: Any) -> str | None:
        return None if v in self.choices else "one of " + ", ".join(repr(c) for c in self.choices)

    def json_schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


class matches:  # noqa: N801
    """A string the whole of which matches `pattern`."""

    def __init__(self, pattern: str, description: str) -> None:
        self.pattern = pattern
        self.description = description
        self._rx = re.compile(pattern)

    def __call__(self, v: Any) -> str | None:
        return None if self._rx.fullmatch(v) else self.description

    def json_schema(self) -> dict[str, Any]:
        return {"pattern": f"^(?:{self.pattern})$"}


def spec(default: Any = None, check: Check | None = None, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    meta = {"check": check, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


REQUIRED = object()  # marker default: the key must be present

FUNCTION_NAME = matches(r"[a-z0-9][a-z0-9-]{0,63}", "lowercase letters, digits and '-', at most 64 characters")
#: NAME, NAME:$LATEST, NAME:VERSION or NAME:ALIAS (an alias name is not all digits, as in Lambda)
FUNCTION_REF = matches(
    r"[a-z0-9][a-z0-9-]{0,63}(:(\$LATEST|[1-9][0-9]{0,9}|(?![0-9]+$)[A-Za-z0-9_-]{1,128}))?",
    "NAME, NAME:$LATEST, NAME:VERSION or NAME:ALIAS (NAME: lowercase letters, digits and '-')",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_MAX_BYTES = 4096  # Lambda's aggregate limit
PATTERN = matches(
    r"[A-Za-z0-9_\-.*$/~\"'@:+?&=%]{1,255}", "a path pattern of at most 255 characters using letters, digits, / and * ? _ - . ~ $ @ : + & = %"
)

HOST_PATTERN = matches(r"[A-Za-z0-9*?.\-:]{1,255}", "a host pattern using letters, digits, '.', '-', ':', '*' and '?'")


def _env_check(env: dict[str, str]) -> str | None:
    for key in env:
        if not ENV_NAME.fullmatch(key):
            return f"names matching [A-Za-z_][A-Za-z0-9_]* (got {key!r})"
    size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if size > ENV_MAX_BYTES:
        return f"at most {ENV_MAX_BYTES} bytes of names and values in total (got {size})"
    return None


def _control_check(value: Any) -> str | None:
    if not isinstance(value, str) or (value and not value.startswith(DATABASE_URL_SCHEMES)):
        return "a postgresql://USER@HOST:PORT/DATABASE URL, or empty for the SQLite file at `registry`"
    return None


@dataclass(frozen=True)
class AppConfig:
    name: str = spec("edgefn-app", FUNCTION_NAME, "the application's name")
    store_dir: str = spec(".edgefn/modules", None, "module store directory, relative to the manifest")
    build_dir: str = spec(".edgefn/build", None, "where built .wasm files go, relative to the manifest")
    registry: str = spec(".edgefn/control.db", None, "the control-plane database (functions, versions, aliases, secrets, async queue), relative to the manifest")
    control: str = spec("", _control_check, "a fleet's control plane: a postgresql:// URL every node and command uses instead of `registry` "
                        "($EDGEFN_CONTROL_URL and --control win over it; docs/fleet.md)")
    secrets_key_file: str = spec(".edgefn/secrets.key", None, "the key secrets are encrypted with when $EDGEFN_SECRETS_KEY is unset: created on the first `edgefn secret put`, owner-only, relative to the manifest")


@dataclass(frozen=True)
class ServerConfig:
    host: str = spec("127.0.0.1", None, "address to listen on")
    port: int = spec(8787, int_range(0, 65535), "cleartext TCP port: HTTP/1.1 and h2c")
    tls_port: int = spec(8443, int_range(0, 65535), "TLS port: HTTP/1.1 and HTTP/2 over TCP, HTTP/3 over QUIC on the same number (0 = no TLS)")
    tls_cert: str | None = spec(None, None, "PEM certificate chain, relative to the manifest (default: a self-signed localhost certificate)")
    tls_key: str | None = spec(None, None, "PEM private key for tls_cert")
    http3: bool = spec(True, None, "serve HTTP/3 on the TLS port and advertise it with Alt-Svc")
    cache_max_bytes: int = spec(256 * 1024 * 1024, int_range(0, 64 * 1024**3), "byte budget of the shared response cache")
    workers: int = spec(1, int_range(1, 64), "server processes sharing the port and the module store")
    guest_threads: int = spec(0, int_range(0, 256), "worker threads running guests per process (0 = one per core)")
    max_concurrency: int = spec(1000, int_range(1, 100_000), "node-wide limit of in-flight invocations; more are throttled")
    body_idle_timeout_ms: int = spec(10_000, int_range(100, 600_000), "a request body that sends nothing for this long is answered 408 and its connection closed")
    body_timeout_ms: int = spec(60_000, int_range(100, 3_600_000), "a request body must arrive whole within this long (else 408, connection closed)")
    max_hops: int = spec(3, int_range(1, 16), "edgefn hops a request may already have made (its Via header); one more is answered 508 Loop Detected")
    trust_forwarded_for: bool = spec(False, None, "true behind a proxy you run: the viewer's X-Forwarded-For is kept and the peer address appended; false: origins get the peer address alone (a viewer's own value is not trusted)")
    http1: str = spec("hypercorn", one_of("hypercorn", "uvicorn"), "what serves the cleartext port: hypercorn (HTTP/1.1 and h2c) or uvicorn (HTTP/1.1 only, httptools + uvloop: a fraction of the CPU per request; docs/performance.md)")


@dataclass(frozen=True)
class AdminConfig:
    """The admin and invoke API: a separate listener, always behind a bearer token unless `--admin-no-token`
    (loopback only)."""

    host: str = spec("127.0.0.1", None, "address of the admin/invoke listener (a non-loopback address needs a token)")
    port: int = spec(8788, int_range(0, 65535), "TCP port of the admin/invoke API (0 = no admin listener)")
    token_env: str = spec("EDGEFN_ADMIN_TOKEN", matches(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name"), "environment variable holding the bearer token")
    token_file: str = spec(".edgefn/admin-token", None, "where the bearer token is kept when token_env is unset: generated on first start, owner-only, relative to the manifest")


@dataclass(frozen=True)
class QueueConfig:
    """Asynchronous invocation: delivery workers and backoff (Lambda's timings by default; tests shorten them)."""

    workers: int = spec(2, int_range(1, 256), "events delivered at once per server")
    retry_delays_s: list[float] = spec(None, _delays_check, "wait before each retry after a function error (Lambda: about 1 and 2 minutes)", factory=lambda: [60.0, 120.0])
    throttle_backoff_min_s: float = spec(1.0, number_range(0.01, 300), "first wait after a throttle; doubles per attempt")
    throttle_backoff_max_s: float = spec(300.0, number_range(0.01, 3600), "longest wait between throttled attempts")
    poll_interval_ms: int = spec(200, int_range(10, 60_000), "how often idle workers look for due events")
    idempotency_window_s: int = spec(300, int_range(1, 86_400), "how long an invocation id deduplicates repeated submissions")


@dataclass(frozen=True)
class LogConfig:
    """Per-function log streams on disk, bounded by rotation and retention."""

    dir: str = spec(".edgefn/logs", None, "directory of the log streams, relative to the manifest")
    max_file_bytes: int = spec(10 * 1024 * 1024, int_range(4096, 10 * 1024**3), "rotate a function's stream at this size")
    keep_files: int = spec(5, int_range(1, 1000), "rotated files kept per function")
    retention_days: int = spec(7, int_range(1, 3650), "delete rotated files older than this")


class _NamespaceList:
    """Namespace names, each at most once."""

    def __call__(self, names: list[str]) -> str | None:
        for n in names:
            if not KV_NAMESPACE.fullmatch(n):
                return f"namespace names of lowercase letters, digits, '_' and '-', at most 64 characters (got {n!r})"
        if len(set(names)) != len(names):
            return "each namespace once"
        return None

    def json_schema(self) -> dict[str, Any]:
        return {"uniqueItems": True, "items": {"type": "string", "pattern": f"^(?:{KV_NAMESPACE.pattern})$"}}


_namespaces_check = _NamespaceList()


@dataclass(frozen=True)
class KvConfig:
    """The key-value store functions share (docs/kv.md): its namespaces, and where it lives."""

    namespaces: list[str] = spec(None, _namespaces_check, "the namespaces functions may be granted (functions.NAME.kv)", factory=list)
    store: str = spec(".edgefn/kv.db", None, "an SQLite file relative to the manifest (one node), or a postgresql:// URL (many nodes sharing one database)")
    cache_ttl_ms: int = spec(1000, int_range(0, 300_000), "PostgreSQL only: how long a node may serve a value it read before reading it again (the staleness bound; 0 = every get reads the database)")


@dataclass(frozen=True)
class TracingConfig:
    """Exporting spans (docs/tracing.md): off unless an endpoint is set here or in $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT."""

    otlp_endpoint: str | None = spec(None, matches(r"https?://\S+", "an http(s):// URL"), "the OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces")
    service_name: str | None = spec(None, None, "the service.name of the spans (default: the app's name)")
    sample_ratio: float = spec(1.0, number_range(0, 1), "the share of new traces recorded (a viewer's traceparent decides for its own)")


def _source_check(value: str) -> str | None:
    """A path with a suffix one of build/languages.py's languages builds."""
    if any(value.endswith(s) and len(value) > len(s) for s in SOURCE_SUFFIXES):
        return None
    *rest, last = SOURCE_SUFFIXES
    return f"a path ending in {', '.join(rest)} or {last}"


def _layers_check(refs: list[str]) -> str | None:
    if len(refs) > 5 or len(set(refs)) != len(refs) or not all(isinstance(r, str) and LAYER_REF.fullmatch(r) for r in refs):
        return 'at most 5 distinct layer versions, each NAME:VERSION such as "mathlib:3" (edgefn layer list shows them)'
    return None


@dataclass(frozen=True)
class FunctionConfig:
    source: str = spec(REQUIRED, _source_check, "the code")
    memory_mb: int = spec(128, int_range(1, MAX_MEMORY_MB), "memory in MB: the cap on linear memory and tables, and the CPU share and default budget (docs/security.md)")
    timeout_ms: int = spec(5000, int_range(1, 900_000), "wall-clock limit per invocation")
    fuel: int | None = spec(None, int_range(1_000, 10**15), "CPU budget per invocation, in wasm instructions (default: 15,625,000 per MB of memory_mb)")
    ephemeral_storage_mb: int = spec(512, int_range(1, MAX_MEMORY_MB), "the size cap of the instance's private /tmp, in MB (WASI modules; Lambda: 512 to 10,240)")
    max_result_bytes: int = spec(1024 * 1024, int_range(16, 64 * 1024 * 1024), "largest result document")
    env: dict[str, str] = spec(None, _env_check, "environment variables", factory=dict)
    allowed_hosts: list[str] = spec(None, None, "hosts the function may fetch from: host, host:port or *.domain", factory=list)
    kv: list[str] = spec(None, _namespaces_check, "key-value namespaces the function may use (declared in [kv] namespaces)", factory=list)
    kv_ops: int = spec(1000, int_range(0, 100_000), "key-value operations one invocation may make (Workers KV: 1,000)")
    kv_bytes: int = spec(64 * 1024 * 1024, int_range(0, 1024**3), "bytes of keys and values one invocation may read and write through the key-value store")
    target: str = spec("freestanding", one_of("freestanding", "wasi"), "C/Zig build target: wasm32-freestanding or a WASI reactor")
    reuse_instances: bool = spec(False, None, "keep warm instances between requests (execution-context reuse); default: a fresh instance per request")
    prewarm: int = spec(0, int_range(0, 256), "warm instances to create at startup (provisioned concurrency); needs reuse_instances = true")
    reserved_concurrency: int | None = spec(None, int_range(0, 100_000), "in-flight invocations reserved for (and capping) this function; 0 throttles every invocation")
    layers: list[str] = spec(None, _layers_check, "published layers on its import path, in order, each NAME:VERSION (edgefn layer publish; at most 5)", factory=list)
    async_invoke: "AsyncInvokeConfig | None" = spec(None)


_DESTINATION_FORM = matches(
    r"(function:[a-z0-9][a-z0-9-]{0,63}(:[A-Za-z0-9$_-]+)?|https?://\S+|dlq)",
    "function:NAME[:QUALIFIER], an http(s):// URL, or dlq (the built-in dead-letter store)",
)


def DESTINATION(value: str) -> str | None:
    """A destination's form, and for a URL one that parses with a host (else it would fail on every record)."""
    problem = _DESTINATION_FORM(value)
    if problem is None and value.startswith(("http://", "https://")):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            return f"a valid http(s):// URL ({exc})"
        if not parts.hostname:
            return "an http(s):// URL with a host"
    return problem



@dataclass(frozen=True)
class AsyncInvokeConfig:
    """What happens to asynchronous invocations of a function (Lambda's event invoke config)."""

    max_retry_attempts: int = spec(2, int_range(0, 2), "retries after a function error")
    max_event_age_s: int = spec(21_600, int_range(60, 21_600), "an event older than this is not delivered (it goes to on_failure)")
    on_success: str | None = spec(None, DESTINATION, "where a record of each successful invocation goes")
    on_failure: str | None = spec("dlq", DESTINATION, "where a record of each failed or expired event goes")


@dataclass(frozen=True)
class ScheduleConfig:
    """A timer: invoke `function` asynchronously on a cron or rate expression (EventBridge syntax, UTC)."""

    function: str = spec(REQUIRED, FUNCTION_REF, "the function to invoke (NAME, NAME:VERSION or NAME:ALIAS)")
    expression: str = spec(REQUIRED, matches(r"(rate|cron)\(.+\)", "rate(N minutes|hours|days) or cron(MIN HOUR DOM MONTH DOW YEAR)"), "when to fire")
    input: str = spec("{}", None, "the JSON text sent as the event's body")
    catch_up: str = spec("once", one_of("skip", "once", "all"), "ticks missed while no server ran: skip them, fire once, or fire each")
    enabled: bool = spec(True, None, "false pauses the schedule")


EVENT_SOURCE_URL = matches(r"(amqps?|rediss?)://\S+", "an amqp:// (RabbitMQ queue) or redis:// (Redis Streams) URL")


@dataclass(frozen=True)
class EventSourceConfig:
    """A polling event source (Lambda's event source mapping): a broker queue or stream whose records the
    node reads in batches and hands to `function` (docs/event-sources.md)."""

    function: str = spec(REQUIRED, FUNCTION_REF, "the function to invoke with each batch (NAME, NAME:VERSION or NAME:ALIAS)")
    source: str = spec(REQUIRED, EVENT_SOURCE_URL, "the broker: amqp://user:pass@host:5672/vhost (a queue) or redis://host:6379/0 (streams)")
    queue: str | None = spec(None, matches(r"[^\s]{1,255}", "a RabbitMQ queue name"), "the RabbitMQ queue to consume (amqp:// sources)")
    streams: list[str] = spec(None, None, "the Redis stream keys to read, one shard each, in order per stream (redis:// sources)", factory=list)
    batch_size: int = spec(10, int_range(1, 10_000), "most records per invocation")
    maximum_batching_window_s: float = spec(0, number_range(0, 300), "how long to gather records for a batch before invoking with fewer")
    starting_position: str = spec("LATEST", one_of("LATEST", "TRIM_HORIZON"), "streams: where a new mapping starts reading (new records only, or the oldest kept)")
    enabled: bool = spec(True, None, "false pauses polling (edgefn event-sources enable|disable changes it at run time)")
    maximum_concurrency: int = spec(2, int_range(1, 1000), "most batches of this source in flight at once on a node (pollers scale up to it with the backlog)")
    visibility_timeout_s: float = spec(30, number_range(0, 43_200), "queues: how long a record of a failed batch stays hidden before it is received again")
    max_receive_count: int = spec(3, int_range(1, 1000), "queues: receives of a record before it goes to on_failure")
    maximum_retry_attempts: int = spec(-1, int_range(-1, 10_000), "streams: retries of a failed batch before its records go to on_failure (-1: until they expire)")
    maximum_record_age_s: int = spec(-1, int_range(-1, 604_800), "streams: a record older than this goes to on_failure unprocessed (-1: no limit; else 60 or more)")
    bisect_batch_on_function_error: bool = spec(False, None, "streams: split a failed batch in two and retry each half")
    report_batch_item_failures: bool = spec(False, None, "the function may answer {\"batchItemFailures\": [{\"itemIdentifier\": ID}]}: only those records are retried")
    on_failure: str = spec("dlq", DESTINATION, "where records that could not be processed go")


@dataclass(frozen=True)
class HookConfig:
    function: str = spec(REQUIRED, FUNCTION_REF, "the function to run for this event (NAME, NAME:VERSION or NAME:ALIAS)")
    include_body: bool = spec(False, None, "expose the body to the function")


@dataclass(frozen=True)
class CachePolicyConfig:
    """What goes into the cache key, and TTL bounds (CloudFront's defaults)."""

    min_ttl: int = spec(0, int_range(0, 10**9), "seconds; a lower origin max-age is raised to this")
    default_ttl: int = spec(86400, int_range(0, 10**9), "seconds, when the origin sends no Cache-Control max-age/s-maxage or Expires")
    max_ttl: int = spec(31_536_000, int_range(0, 10**9), "seconds; a higher origin max-age is lowered to this")
    query_strings: list[str] = spec(None, None, 'query parameters in the cache key (["*"] = all)', factory=list)
    headers: list[str] = spec(None, None, "request headers in the cache key (lowercase names)", factory=list)
    cookies: list[str] = spec(None, None, "cookies in the cache key", factory=list)


@dataclass(frozen=True)
class BehaviorConfig:
    """A cache behavior: which requests it serves, its target, and one function per event type."""

    path_pattern: str | None = spec(None, PATTERN, "which paths this behavior serves (not set on default_behavior)")
    host_pattern: str = spec("*", HOST_PATTERN, "which Host headers this behavior serves")
    function: str | None = spec(None, FUNCTION_REF, "a function acting as the origin (NAME, NAME:VERSION or NAME:ALIAS)")
    origin: str | None = spec(None, matches(r"https?://[^\s/]+(/[^\s]*)?", "an http:// or https:// URL"), "the origin URL to proxy to")
    viewer_request: HookConfig | None = spec(None)
    origin_request: HookConfig | None = spec(None)
    origin_response: HookConfig | None = spec(None)
    viewer_response: HookConfig | None = spec(None)
    cache: CachePolicyConfig | None = spec(None)
    origin_connect_timeout_ms: int = spec(5000, int_range(100, 60_000), "origin connect timeout")
    origin_read_timeout_ms: int = spec(30_000, int_range(100, 180_000), "origin read timeout")


@dataclass(frozen=True)
class Manifest:
    app: AppConfig = spec(None, factory=AppConfig)
    server: ServerConfig = spec(None, factory=ServerConfig)
    admin: AdminConfig = spec(None, factory=AdminConfig)
    queue: QueueConfig = spec(None, factory=QueueConfig)
    logs: LogConfig = spec(None, factory=LogConfig)
    kv: KvConfig = spec(None, factory=KvConfig)
    tracing: TracingConfig = spec(None, factory=TracingConfig)
    functions: dict[str, FunctionConfig] = spec(None, factory=dict)
    behaviors: list[BehaviorConfig] = spec(None, factory=list)
    default_behavior: BehaviorConfig | None = spec(None)
    schedules: dict[str, ScheduleConfig] = spec(None, factory=dict)
    event_sources: list[EventSourceConfig] = spec(None, factory=list)
