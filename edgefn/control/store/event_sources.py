"""Event source mappings in the control database: each one's switch (enabled), and what its pollers did."""

from __future__ import annotations

import time
from typing import Any, Callable

from ...core.app import EventSourceSpec
from ...core.exceptions import NotFound, RegistryError
from ...core.ports import QueueWork
from ...core.records import EventSourceState
from .database import Database
from .queue import SqlEventQueue

__all__ = ["SqlEventSourceStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS event_source_mappings (
    uuid TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,             -- the broker URL without its password
    target TEXT NOT NULL,             -- the queue, or the stream keys joined by commas
    batch_size INTEGER NOT NULL,
    maximum_concurrency INTEGER NOT NULL,
    enabled INTEGER NOT NULL,         -- the switch the pollers follow (edgefn event-sources enable|disable)
    manifest_enabled INTEGER NOT NULL,-- what the manifest said when last deployed: a change there wins over the switch
    last_result TEXT NOT NULL DEFAULT 'No records processed',
    last_processed REAL,
    updated_at REAL NOT NULL,
    batches INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    redelivered INTEGER NOT NULL DEFAULT 0,
    sent_on_failure INTEGER NOT NULL DEFAULT 0
)
"""

_COLUMNS = (
    "uuid, app, function, kind, source, target, batch_size, maximum_concurrency, enabled, last_result, last_processed, updated_at, "
    "batches, records, failed, retried, redelivered, sent_on_failure"
)


class SqlEventSourceStore:
    """The event_source_mappings table (database.Database), beside the queue a failure record may go through."""

    def __init__(self, db: Database, queue: SqlEventQueue) -> None:
        self.db = db
        self.queue = queue
        db.ensure_schema("event-sources", SCHEMA)

    def sync(self, app: str, specs: tuple[EventSourceSpec, ...]) -> None:
        """Record the app's mappings as deployed: new ones as the manifest says; a changed `enabled` in the manifest
        wins over the switch, an unchanged one keeps what `edgefn event-sources enable|disable` set."""
        now = time.time()
        with self.db.transaction() as conn:
            for s in specs:
                target = s.queue if s.queue is not None else ",".join(s.streams)
                row = conn.execute("SELECT manifest_enabled FROM event_source_mappings WHERE uuid = ?", (s.uuid,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO event_source_mappings (uuid, app, function, kind, source, target, batch_size, maximum_concurrency, enabled, "
                        "manifest_enabled, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (s.uuid, app, s.function, s.kind, s.safe_source, target, s.batch_size, s.maximum_concurrency, int(s.enabled), int(s.enabled), now),
                    )
                    continue
                switch = "enabled = ?, " if bool(row[0]) != s.enabled else ""
                conn.execute(
                    f"UPDATE event_source_mappings SET {switch}manifest_enabled = ?, batch_size = ?, maximum_concurrency = ?, updated_at = ? WHERE uuid = ?",
                    ((int(s.enabled),) if switch else ()) + (int(s.enabled), s.batch_size, s.maximum_concurrency, now, s.uuid),
                )

    def list(self, app: str | None = None) -> list[EventSourceState]:
        sql = f"SELECT {_COLUMNS} FROM event_source_mappings" + (" WHERE app = ?" if app is not None else "") + " ORDER BY function, uuid"
        return [_state(r) for r in self.db.query(sql, (app,) if app is not None else ())]

    def get(self, uuid: str) -> EventSourceState:
        """The mapping whose UUID is `uuid` or starts with it (NotFound; RegistryError when a prefix names several)."""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM event_source_mappings WHERE uuid LIKE ? ORDER BY uuid", (uuid.replace("%", "") + "%",))
        if not rows:
            raise NotFound(f"no event source mapping {uuid!r} (edgefn event-sources list shows them)")
        if len(rows) > 1 and rows[0][0] != uuid:
            raise RegistryError(f"{uuid!r} names {len(rows)} event source mappings: give more of the UUID")
        return _state(rows[0])

    def set_enabled(self, uuid: str, enabled: bool) -> EventSourceState:
        full = self.get(uuid).uuid
        with self.db.transaction() as conn:
            conn.execute("UPDATE event_source_mappings SET enabled = ?, updated_at = ? WHERE uuid = ?", (int(enabled), time.time(), full))
        return self.get(full)

    def enabled(self, uuid: str) -> bool:
        rows = self.db.query("SELECT enabled FROM event_source_mappings WHERE uuid = ?", (uuid,))
        return bool(rows[0][0]) if rows else False

    def record(
        self, uuid: str, result: str, *, records: int = 0, failed: int = 0, retried: int = 0, redelivered: int = 0, sent_on_failure: int = 0,
    ) -> None:
        """Count one batch's outcome and keep its result line (Lambda's LastProcessingResult)."""
        with self.db.transaction(serial=False) as conn:
            conn.execute(
                "UPDATE event_source_mappings SET last_result = ?, last_processed = ?, batches = batches + 1, records = records + ?, "
                "failed = failed + ?, retried = retried + ?, redelivered = redelivered + ?, sent_on_failure = sent_on_failure + ? WHERE uuid = ?",
                (result, time.time(), records, failed, retried, redelivered, sent_on_failure, uuid),
            )

    def send_on_failure(self, then: Callable[[QueueWork], None]) -> None:
        """Run `then` (a failure record to its destination) in one transaction of the control queue."""
        with self.db.transaction() as conn:
            then(self.queue.work(conn))


def _state(r: Any) -> EventSourceState:
    return EventSourceState(
        uuid=r[0], app=r[1], function=r[2], kind=r[3], source=r[4], target=r[5], batch_size=int(r[6]), maximum_concurrency=int(r[7]),
        enabled=bool(r[8]), last_result=r[9], last_processed=r[10], updated_at=float(r[11]), batches=int(r[12]), records=int(r[13]),
        failed=int(r[14]), retried=int(r[15]), redelivered=int(r[16]), sent_on_failure=int(r[17]),
    )
