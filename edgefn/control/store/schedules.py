"""The scheduler's state in the control database: where each schedule stands, and the ticks it fired."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ...core.ports import QueueWork
from .database import Database
from .queue import SqlEventQueue

__all__ = ["SqlScheduleStore", "SqlScheduleWork"]

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


class SqlScheduleWork:
    """One evaluation's changes, in one transaction with the events it queues (`queue`)."""

    def __init__(self, conn: Any, queue: QueueWork) -> None:
        self._conn = conn
        self.queue = queue

    def state(self, name: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM schedule_state WHERE schedule = ?", (name,)).fetchone()
        return dict(row) if row is not None else None

    def reset(self, name: str, expression: str, anchor: int, now: float, last_tick: int | None) -> None:
        """A new, changed or re-enabled schedule: it counts from `anchor` and has handled everything up to `now`."""
        self._conn.execute(
            "INSERT INTO schedule_state (schedule, expression, enabled, anchor, checked_through, last_tick) VALUES (?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (schedule) DO UPDATE SET expression = excluded.expression, enabled = 1, anchor = excluded.anchor, "
            "checked_through = excluded.checked_through, last_tick = excluded.last_tick",
            (name, expression, anchor, now, last_tick),
        )

    def record_tick(self, name: str, tick: int, invocation_id: str, now: float) -> bool:
        """Note that `tick` fires now; False if some process already fired it."""
        cur = self._conn.execute(
            "INSERT INTO schedule_ticks (schedule, tick, invocation_id, fired_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (name, tick, invocation_id, now)
        )
        return bool(cur.rowcount == 1)

    def advance(self, name: str, checked_through: float, last_tick: int | None) -> None:
        self._conn.execute("UPDATE schedule_state SET checked_through = ?, last_tick = ? WHERE schedule = ?", (checked_through, last_tick, name))

    def prune(self, name: str, before: float) -> None:
        """Forget fired ticks older than `before` (only recent ones can still be fired twice)."""
        self._conn.execute("DELETE FROM schedule_ticks WHERE schedule = ? AND tick < ?", (name, before))


class SqlScheduleStore:
    """Schedule state in the control database, beside the queue its ticks go to."""

    def __init__(self, db: Database, queue: SqlEventQueue) -> None:
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
    def transaction(self) -> Iterator[SqlScheduleWork]:
        """One evaluation under the database's write lock: all of it commits, or none."""
        with self.db.transaction() as conn:
            yield SqlScheduleWork(conn, self.queue.work(conn))
