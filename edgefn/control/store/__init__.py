"""The control plane's storage: the only place SQL is written.

SQLite is the embedded default: one database file holds the registry, the async queue and the schedule
state (`open_control_store`). Another engine (PostgreSQL, for a fleet of nodes) is one more folder beside
these modules implementing the same Protocols (`core.ports.ControlStore`), chosen here.
"""

from __future__ import annotations

from pathlib import Path

from ...core.app import DATABASE_URL_SCHEMES, KvSettings
from ...core.ports import ControlStore, KeyValueStore
from .kv import SqliteKeyValueStore
from .purges import SqlitePurgeLog
from .queue import IDEMPOTENCY_WINDOW_S, SqliteEventQueue
from .registry import SqliteRegistry
from .schedules import SqliteScheduleStore
from .secrets import SqliteSecretStore
from .sqlite import Database

__all__ = ["SqliteControlStore", "open_control_store", "open_kv_of", "open_kv_store"]


class SqliteControlStore:
    """The stores over one SQLite file (registry, secrets, queue, schedules, cache purges), so a schedule tick and the event
    it queues commit together."""

    def __init__(self, path: Path, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> None:
        self.db = Database(path)
        self.registry = SqliteRegistry(self.db)
        self.queue = SqliteEventQueue(self.db, idempotency_window_s)
        self.schedules = SqliteScheduleStore(self.db, self.queue)
        self.purges = SqlitePurgeLog(self.db)
        self.secrets = SqliteSecretStore(self.db)

    def close(self) -> None:
        self.db.close()


def open_control_store(path: Path, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> ControlStore:
    """The control plane's storage at `path` (a locked app's `registry_path`)."""
    return SqliteControlStore(path, idempotency_window_s)


def open_kv_store(location: str | Path, cache_ttl_s: float = 1.0) -> KeyValueStore:
    """The key-value store at `location`: a postgresql:// URL (core.app.DATABASE_URL_SCHEMES), or an SQLite file's path."""
    if isinstance(location, str) and location.startswith(DATABASE_URL_SCHEMES):
        from .postgres import PostgresKeyValueStore

        return PostgresKeyValueStore(location, cache_ttl_s)
    return SqliteKeyValueStore(Path(location))


def open_kv_of(kv: KvSettings) -> KeyValueStore | None:
    """The key-value store an app's [kv] names, or None when it declares no namespace (nothing could use one)."""
    return open_kv_store(kv.store, kv.cache_ttl_s) if kv.namespaces else None
