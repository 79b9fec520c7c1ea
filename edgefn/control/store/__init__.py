"""The control plane's storage: the only place SQL is written.

SQLite is the embedded default: one database file holds the registry, the async queue and the schedule
state (`open_control_store`). Another engine (PostgreSQL, for a fleet of nodes) is one more folder beside
these modules implementing the same Protocols (`core.ports.ControlStore`), chosen here.
"""

from __future__ import annotations

from pathlib import Path

from ...core.ports import ControlStore
from .purges import SqlitePurgeLog
from .queue import IDEMPOTENCY_WINDOW_S, SqliteEventQueue
from .registry import SqliteRegistry
from .schedules import SqliteScheduleStore
from .sqlite import Database

__all__ = ["SqliteControlStore", "open_control_store"]

class SqliteControlStore:
    """The stores over one SQLite file (registry, queue, schedules, cache purges), so a schedule tick and the event
    it queues commit together."""

    def __init__(self, path: Path, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> None:
        self.db = Database(path)
        self.registry = SqliteRegistry(self.db)
        self.queue = SqliteEventQueue(self.db, idempotency_window_s)
        self.schedules = SqliteScheduleStore(self.db, self.queue)
        self.purges = SqlitePurgeLog(self.db)

    def close(self) -> None:
        self.db.close()


def open_control_store(path: Path, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> ControlStore:
    """The control plane's storage at `path` (a locked app's `registry_path`)."""
    return SqliteControlStore(path, idempotency_window_s)
