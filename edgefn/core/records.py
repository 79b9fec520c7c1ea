"""The control plane's records: what the registry, the async queue and their callers pass between them.

Plain frozen data, no storage types: a registry or queue backend (SQLite today, PostgreSQL for a fleet) turns
its rows into these and nothing else crosses its interface (`core.ports`).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INVOKE", "KV_MAX_KEY_BYTES", "KV_MAX_LIST_LIMIT", "KV_MAX_VALUE_BYTES", "KV_MIN_TTL_S", "KV_NAMESPACE", "LATEST", "POST", "PURGE_KINDS",
    "SECRET_NAME", "kv_problem", "purge_problem", "AliasRecord", "KvPage", "SealedSecret", "CachePurge", "CodeAndConfig", "DeadLetter", "EventSourceState", "FunctionRecord", "FunctionRef", "LayerVersion",
    "NodeRecord", "QueuedEvent", "RegistrySnapshot", "VersionRecord",
]

#: what a cache purge names: one path (any query string), every path under a prefix, a surrogate key, or everything
PURGE_KINDS = ("path", "prefix", "tag", "all")


def purge_problem(kind: str, value: str) -> str | None:
    """What is wrong with a purge of `kind` naming `value` (the CLI and the admin API say it), or None."""
    if kind in ("path", "prefix") and not value.startswith("/"):
        return f"{value!r} is not a path: give one starting with '/', e.g. /index.html or '/images/*'"
    if kind == "tag" and not value.strip():
        return "the tag is empty: give a key the origin sent in Cache-Tag or Surrogate-Key"
    return None


# --- the key-value store (docs/kv.md): one set of limits for guests, the CLI and the admin API ---

#: a namespace's name, as the manifest's [kv] namespaces declare it
KV_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Workers KV's limits: keys up to 512 bytes, values up to 25 MiB
KV_MAX_KEY_BYTES = 512
KV_MAX_VALUE_BYTES = 25 * 1024 * 1024
#: the shortest TTL a put may set, in seconds (Workers KV: 60; shorter here, so a test sees an expiry)
KV_MIN_TTL_S = 1
#: most keys one list call returns (Workers KV: 1,000)
KV_MAX_LIST_LIMIT = 1000


def kv_problem(key: bytes, value: bytes | None = None, ttl_s: float | None = None) -> str | None:
    """What is wrong with a key (and the value and TTL of a put), said the same to a guest, the CLI and the admin API; or None."""
    if not key:
        return "the key is empty"
    if len(key) > KV_MAX_KEY_BYTES:
        return f"the key is {len(key):,} bytes, over the {KV_MAX_KEY_BYTES}-byte limit"
    if value is not None and len(value) > KV_MAX_VALUE_BYTES:
        return f"the value is {len(value):,} bytes, over the {KV_MAX_VALUE_BYTES:,}-byte limit (25 MiB)"
    if ttl_s is not None and ttl_s < KV_MIN_TTL_S:
        return f"a TTL of {ttl_s:g} s is under the minimum of {KV_MIN_TTL_S} s"
    return None


@dataclass(frozen=True)
class KvPage:
    """One page of a list by prefix: keys in byte order, and the cursor of the next page (None: this is the last)."""

    keys: tuple[bytes, ...]
    cursor: str | None


# --- secrets (docs/security.md) ---

#: a secret's name: what the guest passes to env_get, so an environment variable's name
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class SealedSecret:
    """One generation of a secret as the control plane stores it: encrypted (AES-256-GCM), never in plain text."""

    function: str
    name: str
    generation: int
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)


LATEST = "$LATEST"


@dataclass(frozen=True)
class FunctionRef:
    """What a behavior, schedule or invocation names: `name`, `name:$LATEST`, `name:7` or `name:alias`."""

    name: str
    qualifier: str = LATEST

    @classmethod
    def parse(cls, ref: str) -> "FunctionRef":
        name, _, qualifier = ref.partition(":")
        return cls(name, qualifier or LATEST)

    @property
    def is_version(self) -> bool:
        return self.qualifier == LATEST or self.qualifier.isdigit()

    def __str__(self) -> str:
        return self.name if self.qualifier == LATEST else f"{self.name}:{self.qualifier}"


@dataclass(frozen=True)
class CodeAndConfig:
    """One deployable state of a function: code digest + configuration (a FunctionConfig as a dict)."""

    digest: str
    config: dict[str, Any]

    def same_as(self, other: "CodeAndConfig") -> bool:
        return self.digest == other.digest and self.config == other.config


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    latest: CodeAndConfig
    #: in-flight invocations reserved for (and capping) the function; None = draws on the unreserved pool
    reserved_concurrency: int | None
    #: Lambda's RevisionId of $LATEST: changes on every deploy
    revision_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class VersionRecord:
    function: str
    version: int
    code: CodeAndConfig
    description: str
    created_at: float


@dataclass(frozen=True)
class AliasRecord:
    function: str
    name: str
    version: int
    #: a second version and the share of invocations it gets (0 < weight < 1): a canary
    extra_version: int | None = None
    extra_weight: float = 0.0
    description: str = ""
    updated_at: float = 0.0

    def routing(self) -> dict[str, float]:
        """version -> share of invocations, as shown by `alias list` and the API."""
        if self.extra_version is None:
            return {str(self.version): 1.0}
        return {str(self.version): round(1.0 - self.extra_weight, 6), str(self.extra_version): self.extra_weight}


@dataclass(frozen=True)
class RegistrySnapshot:
    """Everything a server needs to route invocations, read in one transaction."""

    revision: int
    functions: dict[str, FunctionRecord]
    versions: dict[tuple[str, int], VersionRecord]
    aliases: dict[tuple[str, str], AliasRecord]
    #: (function, qualifier) -> instances to keep initialised (provisioned concurrency)
    provisioned: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (function, "$LATEST" | "7") -> secret name -> the generation that version reads (published versions keep theirs)
    secrets: dict[tuple[str, str], dict[str, SealedSecret]] = field(default_factory=dict)
    #: app name -> the document its last deploy wrote (control/deploy.py: behaviors, what it deployed)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRecord:
    """One server process of a fleet as its heartbeat describes it (`edgefn nodes list`)."""

    id: str
    app: str
    #: where it listens for viewers (host:port)
    address: str
    hostname: str
    pid: int
    #: the registry revision its catalog serves
    revision: int
    #: every "name:version" it serves ($LATEST included)
    versions: tuple[str, ...]
    started_at: float
    last_seen: float


# --- the async queue ---

#: a queue row's kind: an event for a function, or a destination record to POST
INVOKE = "invoke"
POST = "post"


@dataclass(frozen=True)
class QueuedEvent:
    """One row of the queue as a worker or `edgefn dlq` sees it."""

    id: str
    kind: str
    target: str
    #: the function the row belongs to (for a "post" row: the function whose record it carries)
    function: str
    payload: bytes
    source: str
    enqueued_at: float
    due_at: float
    #: invocations that ran to an outcome (the next one is attempt `attempts + 1`)
    attempts: int
    throttles: int
    #: the last outcome as a Lambda responseContext + responsePayload (None before the first)
    last_response: dict[str, Any] | None
    lease_token: str | None = None


@dataclass(frozen=True)
class LayerVersion:
    """One immutable version of a layer: code many functions share (`edgefn layer publish`), stored by digest."""

    name: str
    version: int
    #: "python" (pure-Python packages, a zip) or "wasm" (a core module whose exports functions import)
    kind: str
    digest: str
    size: int
    description: str
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class EventSourceState:
    """An event source mapping as `edgefn event-sources list` and the admin API show it (Lambda's EventSourceMappingConfiguration)."""

    uuid: str
    app: str
    function: str
    kind: str
    source: str
    target: str
    batch_size: int
    maximum_concurrency: int
    enabled: bool
    last_result: str
    last_processed: float | None
    updated_at: float
    batches: int = 0
    records: int = 0
    failed: int = 0
    retried: int = 0
    redelivered: int = 0
    sent_on_failure: int = 0

    def document(self) -> dict[str, Any]:
        """Lambda's EventSourceMappingConfiguration, with edgefn's counters (the CLI's --json and the admin API)."""
        def iso(t: float) -> str:
            return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

        return {
            "UUID": self.uuid, "FunctionArn": f"edgefn:function:{self.function}", "EventSourceArn": f"edgefn:{self.kind}:{self.source}:{self.target}",
            "Source": self.source, "Target": self.target, "Kind": self.kind, "BatchSize": self.batch_size,
            "ScalingConfig": {"MaximumConcurrency": self.maximum_concurrency}, "State": "Enabled" if self.enabled else "Disabled",
            "LastProcessingResult": self.last_result, "LastProcessed": iso(self.last_processed) if self.last_processed else None,
            "LastModified": iso(self.updated_at),
            "Counters": {
                "Batches": self.batches, "Records": self.records, "Failed": self.failed, "Retried": self.retried,
                "Redelivered": self.redelivered, "SentOnFailure": self.sent_on_failure,
            },
        }


@dataclass(frozen=True)
class DeadLetter:
    id: str
    kind: str
    target: str
    function: str
    payload: bytes
    record: dict[str, Any]
    reason: str
    created_at: float


@dataclass(frozen=True)
class CachePurge:
    """One purge of the edge caches, as the control plane logs it for every server process to apply."""

    id: int
    kind: str  # one of PURGE_KINDS
    value: str  # the path, prefix or tag; "" for "all"
    created_at: float  # epoch s
