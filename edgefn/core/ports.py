"""The seams between floors: what a lower floor calls without knowing who answers.

A lower floor never imports a higher one (docs/architecture.md); where it must reach up it takes one of
these, and the composition root (`edgefn/node.py`) passes the implementation:

- the runtime reports each invocation to an `InvocationObserver` (the Prometheus metrics implement it);
- the edge pipeline looks functions up through a `FunctionResolver` (the registry's live catalog) and
  reports what it decided to an `EdgeObserver` (the metrics again);
- a guest's key-value calls reach a `KeyValueStore` (SQLite's or PostgreSQL's, chosen by the app's [kv] store);
- the control plane keeps its state in a `ControlStore` (a `Registry`, an `EventQueue` whose transactional
  `QueueWork` commits an outcome with what it causes, a `ScheduleStore`): SQLite's lives in `control/store/`,
  and another engine is one more folder there behind the same Protocols. For a fleet it also holds the
  code by digest (`CodeStore`), the nodes' heartbeats (`NodeDirectory`) and, on an engine that can push,
  a `ChangeFeed` that wakes a node when something it follows changed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from .app import EventSourceSpec, FunctionSpec
from .events import XCache
from .exceptions import InvocationError
from .records import (
    AliasRecord,
    CachePurge,
    CodeAndConfig,
    DeadLetter,
    EventSourceState,
    FunctionRecord,
    KvPage,
    LayerVersion,
    NodeRecord,
    QueuedEvent,
    RegistrySnapshot,
    SealedSecret,
    VersionRecord,
)
from .report import InvocationReport

__all__ = [
    "ChangeFeed", "CodeStore", "ControlStore", "EdgeObserver", "EventQueue", "EventSourceStore", "FunctionResolver", "InvocationObserver", "KeyValueStore", "LayerStore", "NoObserver", "NodeDirectory", "PurgeLog", "QueueWork",
    "Registry", "ScheduleStore", "ScheduleWork", "SecretStore",
]


class InvocationObserver(Protocol):
    """Told about every invocation the runtime runs."""

    def invocation_started(self, function: str) -> None: ...

    def invocation_finished(self, fn: FunctionSpec, report: InvocationReport, error: InvocationError | None) -> None: ...


class EdgeObserver(Protocol):
    """Told what the edge pipeline decided for each request."""

    def invocation_rejected(self, function: str, kind: str) -> None: ...

    def cache_request(self, x_cache: XCache) -> None: ...

    def origin_fetched(self, behavior: str, seconds: float) -> None: ...


class FunctionResolver(Protocol):
    """A function reference (`name`, `name:7`, `name:alias`) -> what runs for one request."""

    def select(self, ref: str, request_id: str) -> FunctionSpec:
        """The version that runs (a weighted alias picks one per request); raises UnknownFunction."""
        ...

    def check(self, ref: str) -> str | None:
        """Why `ref` cannot be resolved now, or None if it can."""
        ...


class Registry(Protocol):
    """The registry's storage interface. Every method is atomic; writes bump `revision()`."""

    #: where it is kept, for messages ("deployed to …")
    location: str

    def revision(self) -> int: ...
    def snapshot(self) -> RegistrySnapshot: ...
    def put_latest(self, name: str, code: CodeAndConfig, expected_revision_id: str | None = None) -> tuple[FunctionRecord, bool]: ...
    def put_many(
        self, items: dict[str, CodeAndConfig], expected_revision_ids: dict[str, str] | None = None, document: tuple[str, dict[str, Any]] | None = None,
    ) -> dict[str, bool]: ...
    def get_app(self, app: str) -> dict[str, Any] | None: ...
    def get_function(self, name: str) -> FunctionRecord: ...
    def list_functions(self) -> list[FunctionRecord]: ...
    def publish(self, name: str, description: str = "", expected_revision_id: str | None = None) -> tuple[VersionRecord, bool]: ...
    def list_versions(self, name: str) -> list[VersionRecord]: ...
    def get_version(self, name: str, version: int) -> VersionRecord: ...
    def set_alias(self, alias: AliasRecord) -> AliasRecord: ...
    def get_alias(self, name: str, alias: str) -> AliasRecord: ...
    def list_aliases(self, name: str) -> list[AliasRecord]: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def alias_history(self, name: str, alias: str) -> list[AliasRecord]: ...
    def set_reserved_concurrency(self, name: str, reserved: int | None) -> None: ...
    def set_provisioned_concurrency(self, name: str, qualifier: str, count: int) -> None: ...


class EventQueue(Protocol):
    """The storage interface of asynchronous invocation. Every method is atomic."""

    def enqueue(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api",
                enqueued_at: float | None = None) -> str: ...
    def submit(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api",
               enqueued_at: float | None = None) -> tuple[str, bool]: ...
    def claim(self, lease_for: Callable[[QueuedEvent], float]) -> QueuedEvent | None: ...
    def renew(self, event: QueuedEvent, lease_s: float) -> bool: ...
    def retry(self, event: QueuedEvent, due_at: float, *, attempts: int, throttles: int, last_response: dict[str, Any]) -> bool: ...
    def finish(self, event: QueuedEvent, then: Callable[[QueueWork], None] | None = None) -> bool: ...
    def stats(self) -> tuple[int, float | None]: ...
    def pending(self, function: str | None = None) -> list[QueuedEvent]: ...
    def dead_letters(self, function: str | None = None) -> list[DeadLetter]: ...
    def replay(self, ids: list[str] | None, function: str | None = None) -> list[tuple[str, str]]: ...


class QueueWork(Protocol):
    """What may be done inside the transaction that finishes (or schedules) an event: a unit of work that
    commits with it or not at all, so an outcome is never lost or sent twice."""

    def enqueue(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api", enqueued_at: float | None = None) -> str:
        """Queue an event for `ref`; its request id (an invocation id seen in the idempotency window: the first one's)."""
        ...

    def add_post(self, url: str, function: str, record: dict[str, Any], request_id: str) -> str:
        """Queue the POST of a destination record; its row id."""
        ...

    def park(self, event: QueuedEvent, record: dict[str, Any], reason: str) -> None:
        """Keep `event` and its record as a dead letter."""
        ...




class ScheduleWork(Protocol):
    """One evaluation of a schedule, in one transaction with the events it queues (`queue`)."""

    queue: QueueWork

    def state(self, name: str) -> dict[str, Any] | None:
        """The schedule's row (expression, enabled, anchor, checked_through, last_tick), or None if new."""
        ...

    def reset(self, name: str, expression: str, anchor: int, now: float, last_tick: int | None) -> None: ...

    def record_tick(self, name: str, tick: int, invocation_id: str, now: float) -> bool:
        """Note that `tick` fires now; False if some process already fired it."""
        ...

    def advance(self, name: str, checked_through: float, last_tick: int | None) -> None: ...

    def prune(self, name: str, before: float) -> None: ...


class ScheduleStore(Protocol):
    """Where each schedule stands and the ticks it fired, beside the queue its ticks go to."""

    def state(self, name: str) -> dict[str, Any] | None: ...

    def disable(self, name: str) -> None: ...

    def ticks(self, name: str) -> list[int]: ...

    def transaction(self) -> AbstractContextManager[ScheduleWork]:
        """One evaluation under the store's write lock: all of it commits, or none."""
        ...


class PurgeLog(Protocol):
    """Cache purges in order: written by `edgefn cache purge` and the admin API, followed by every server process."""

    def add(self, kind: str, value: str) -> CachePurge: ...

    def since(self, after_id: int) -> list[CachePurge]:
        """The purges logged after `after_id`, oldest first."""
        ...

    def last_id(self) -> int: ...


class SecretStore(Protocol):
    """Encrypted secrets per function, beside the registry: each put is a new generation; $LATEST reads the newest, a
    published version the generations current when it was published (captured by reference, never by value)."""

    def put(self, function: str, name: str, nonce: bytes, ciphertext: bytes) -> SealedSecret: ...

    def delete(self, function: str, name: str) -> bool: ...

    def names(self, function: str) -> list[tuple[str, float]]:
        """The names $LATEST of `function` has, with when each was last put (epoch s); never a value."""
        ...


class KeyValueStore(Protocol):
    """The key-value store guests, the CLI and the admin API share (docs/kv.md). Keys and values are bytes; a TTL
    is in seconds; an expired key reads as absent. Calls are synchronous (a guest calls from its worker thread)."""

    #: True when a call may wait on the network (the invocation then gives its CPU slot back, as for a fetch)
    remote: bool

    def get(self, namespace: str, key: bytes) -> bytes | None: ...

    def put(self, namespace: str, key: bytes, value: bytes, ttl_s: float | None = None) -> None: ...

    def delete(self, namespace: str, key: bytes) -> bool: ...

    def list(self, namespace: str, prefix: bytes = b"", cursor: str | None = None, limit: int = 1000) -> KvPage: ...

    def close(self) -> None: ...


class CodeStore(Protocol):
    """Deployed code, stored once by its sha256: what a node fetches when its module store lacks a digest."""

    def missing(self, digests: set[str]) -> set[str]:
        """The digests of `digests` not stored yet."""
        ...

    def put(self, digest: str, data: bytes) -> None: ...

    def get(self, digest: str) -> bytes | None:
        """The bytes, or None if nothing was stored under `digest` (the caller verifies them)."""
        ...

    def prune(self, keep: set[str], dry_run: bool = False) -> tuple[int, int]:
        """Remove code no digest of `keep` needs (older than a deploy can be in flight); (how many, bytes)."""
        ...


class NodeDirectory(Protocol):
    """The nodes serving from this control plane, each as its last heartbeat described it."""

    def heartbeat(self, node: NodeRecord) -> None: ...

    def leave(self, node_id: str) -> None:
        """A node stopping cleanly takes its entry away (one killed is seen by its `last_seen`)."""
        ...

    def list(self) -> list[NodeRecord]: ...


class ChangeFeed(Protocol):
    """Calls `listener(topic)` ("registry", "purges", "queue") from its own thread when a change commits, on
    any node; a poll stays the fallback (a notification can be missed while reconnecting)."""

    def subscribe(self, listener: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


class EventSourceStore(Protocol):
    """Each event source mapping's switch and counters (control/event_sources/ polls; the CLI and admin API switch)."""

    def sync(self, app: str, specs: tuple[EventSourceSpec, ...]) -> None: ...
    def list(self, app: str | None = None) -> list[EventSourceState]: ...
    def get(self, uuid: str) -> EventSourceState: ...
    def set_enabled(self, uuid: str, enabled: bool) -> EventSourceState: ...
    def enabled(self, uuid: str) -> bool: ...
    def record(
        self, uuid: str, result: str, *, records: int = 0, failed: int = 0, retried: int = 0, redelivered: int = 0, sent_on_failure: int = 0,
    ) -> None: ...
    def send_on_failure(self, then: Callable[[QueueWork], None]) -> None: ...


class LayerStore(Protocol):
    """Layer versions and their content (control/layers.py publishes and fetches them)."""

    def publish(self, name: str, kind: str, data: bytes, description: str = "") -> LayerVersion: ...
    def get(self, name: str, version: int) -> LayerVersion: ...
    def list(self, name: str | None = None) -> list[LayerVersion]: ...
    def data(self, digest: str) -> bytes: ...


class ControlStore(Protocol):
    """One control plane's storage: registry, async queue and schedule state, committed together where a change
    spans them. `control/store/` opens one; the rest of edgefn sees only these interfaces."""

    @property
    def registry(self) -> Registry: ...

    @property
    def queue(self) -> EventQueue: ...

    @property
    def schedules(self) -> ScheduleStore: ...

    @property
    def purges(self) -> PurgeLog: ...

    @property
    def secrets(self) -> SecretStore: ...

    @property
    def code(self) -> CodeStore: ...

    @property
    def nodes(self) -> NodeDirectory: ...

    @property
    def event_sources(self) -> EventSourceStore: ...

    @property
    def layers(self) -> LayerStore: ...

    #: None where changes are only polled (SQLite)
    changes: ChangeFeed | None
    #: shared by nodes that need not share a disk (PostgreSQL): deploys then put their code in `code`
    fleet: bool

    def close(self) -> None: ...


class NoObserver:
    """Observes nothing (the CLI's one-off invocations, benchmarks)."""

    def invocation_started(self, function: str) -> None:
        pass

    def invocation_finished(self, fn: FunctionSpec, report: InvocationReport, error: InvocationError | None) -> None:
        pass

    def invocation_rejected(self, function: str, kind: str) -> None:
        pass

    def cache_request(self, x_cache: XCache) -> None:
        pass

    def origin_fetched(self, behavior: str, seconds: float) -> None:
        pass
