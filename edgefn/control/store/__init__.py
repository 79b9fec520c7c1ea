"""The control plane's storage: the only place SQL is written.

The stores (registry, queue, schedules, secrets, purges, code, nodes, event source mappings, layers) are written once over database.Database.
SQLite is the embedded default: one database file holds them all (sqlite.py). PostgreSQL, for a fleet of nodes
on one database, is the folder postgres/. `open_control_store` picks the engine from the location: a
postgresql:// URL or an SQLite file's path.
"""

from __future__ import annotations

from pathlib import Path

from ...core.app import DATABASE_URL_SCHEMES, KvSettings
from ...core.ports import ChangeFeed, ControlStore, KeyValueStore
from .code import SqlCodeStore
from .database import Database
from .event_sources import SqlEventSourceStore
from .kv import SqliteKeyValueStore
from .layers import SqlLayerStore
from .nodes import SqlNodeDirectory
from .purges import SqlPurgeLog
from .queue import IDEMPOTENCY_WINDOW_S, SqlEventQueue
from .registry import SqlRegistry
from .schedules import SqlScheduleStore
from .secrets import SqlSecretStore
from .sqlite import SqliteDatabase

__all__ = ["SqlControlStore", "open_control_store", "open_kv_of", "open_kv_store"]


class SqlControlStore:
    """The stores over one database, so a schedule tick and the event it queues commit together."""

    def __init__(self, db: Database, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S, changes: ChangeFeed | None = None, fleet: bool = False) -> None:
        self.db = db
        self.fleet = fleet
        self.location = db.location
        self.registry = SqlRegistry(db)
        self.queue = SqlEventQueue(db, idempotency_window_s)
        self.schedules = SqlScheduleStore(db, self.queue)
        self.purges = SqlPurgeLog(db)
        self.secrets = SqlSecretStore(db)
        self.code = SqlCodeStore(db)
        self.nodes = SqlNodeDirectory(db)
        self.event_sources = SqlEventSourceStore(db, self.queue)
        self.layers = SqlLayerStore(db)
        self.changes = changes

    def close(self) -> None:
        if self.changes is not None:
            self.changes.close()
        self.db.close()


def open_control_store(location: str | Path, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> ControlStore:
    """The control plane's storage at `location`: a postgresql:// URL (a fleet's database; nothing is read
    until first used, so a node starts while it is down), or an SQLite file's path."""
    if isinstance(location, str) and location.startswith(DATABASE_URL_SCHEMES):
        from .postgres import PostgresDatabase

        pg = PostgresDatabase(location)
        return SqlControlStore(pg, idempotency_window_s, changes=pg.change_feed(), fleet=True)
    return SqlControlStore(SqliteDatabase(Path(location)), idempotency_window_s)


def open_kv_store(location: str | Path, cache_ttl_s: float = 1.0) -> KeyValueStore:
    """The key-value store at `location`: a postgresql:// URL (core.app.DATABASE_URL_SCHEMES), or an SQLite file's path."""
    if isinstance(location, str) and location.startswith(DATABASE_URL_SCHEMES):
        from .postgres import PostgresKeyValueStore

        return PostgresKeyValueStore(location, cache_ttl_s)
    return SqliteKeyValueStore(Path(location))


def open_kv_of(kv: KvSettings) -> KeyValueStore | None:
    """The key-value store an app's [kv] names, or None when it declares no namespace (nothing could use one)."""
    return open_kv_store(kv.store, kv.cache_ttl_s) if kv.namespaces else None
