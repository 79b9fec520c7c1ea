"""The scheduler's state in the control database: where each schedule stands, and the ticks it fired."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any, Iterator

from ...core.ports import QueueWork
from .queue import SqliteEventQueue
from .sqlite import Database

__all__ = ["SqliteScheduleStore", "SqliteScheduleWork"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_state (
    schedule TEXT PRIMARY KEY,
    expression TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    anchor INTEGER NOT NULL,          -- epoch s: where rate() ticks count from
    checked_through REAL NOT NULL,    -- epoch s: every tick at or before this has been handled
    last_tick INTEGER                 -- epoch s: the last tick that fired
);
CREATE TABLE IF NOT EXISTS schedule_ticks (
    schedule TEXT NOT NULL,
    tick INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    fired_at REAL NOT NULL,
    PRIMARY KEY (schedule, tick)
)
"""


class SqliteScheduleWork:
    """One evaluation's changes, in one transaction with the events it queues (`queue`)."""

    def __init__(self, conn: sqlite3.Connection, queue: QueueWork) -> None:
        self._conn = conn
        self.queue = queue

    def state(self, name: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM schedule_state WHERE schedule = ?", (name,)).fetchone()
        return dict(row) if row is not None else None

    def reset(self, name: str, expression: str, anchor: int, now: float, last_tick: int | None) -> None:
        """A new, changed or re-enabled schedule: it counts from `anchor` and has handled everything up to `now`."""
        self._conn.execute(
            "INSERT OR REPLACE INTO schedule_state (schedule, expression, enabled, anchor, checked_through, last_tick) VALUES (?, ?, 1, ?, ?, ?)",
            (name, expression, anchor, now, last_tick),
        )

    def record_tick(self, name: str, tick: int, invocation_id: str, now: float) -> bool:
        """Note that `tick` fires now; False if some process already fired it."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO schedule_ticks (schedule, tick, invocation_id, fired_at) VALUES (?, ?, ?, ?)", (name, tick, invocation_id, now)
        )
        return cur.rowcount == 1

    def advance(self, name: str, checked_through: float, last_tick: int | None) -> None:
        self._conn.execute("UPDATE schedule_state SET checked_through = ?, last_tick = ? WHERE schedule = ?", (checked_through, last_tick, name))

    def prune(self, name: str, before: float) -> None:
        """Forget fired ticks older than `before` (only recent ones can still be fired twice)."""
        self._conn.execute("DELETE FROM schedule_ticks WHERE schedule = ? AND tick < ?", (name, before))


class SqliteScheduleStore:
    """Schedule state in the control database, beside the queue its ticks go to."""

    def __init__(self, db: Database, queue: SqliteEventQueue) -> None:
        self.db = db
        self.queue = queue
        db.ensure_schema("schedules", SCHEMA)

    def state(self, name: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM schedule_state WHERE schedule = ?", (name,))
        return dict(rows[0]) if rows else None

    def disable(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE schedule_state SET enabled = 0 WHERE schedule = ?", (name,))

    def ticks(self, name: str) -> list[int]:
        """The ticks fired for `name` that are still remembered, oldest first."""
        return [int(r["tick"]) for r in self.db.query("SELECT tick FROM schedule_ticks WHERE schedule = ? ORDER BY tick", (name,))]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteScheduleWork]:
        """One evaluation under the database's write lock: all of it commits, or none."""
        with self.db.transaction() as conn:
            yield SqliteScheduleWork(conn, self.queue.work(conn))
