"""The durable event queue of asynchronous invocations, and its dead-letter store, in the control database.

`core.ports.EventQueue` is the storage interface; `SqlEventQueue` keeps it in the control database beside the registry.
A row is either an event for a function (kind "invoke": target = NAME[:QUALIFIER], payload = the event
document as JSON) or a destination record to POST (kind "post": target = the URL, payload = the record).
Workers claim a due row with a lease (on SQLite under the file's write lock; on PostgreSQL with FOR UPDATE
SKIP LOCKED, so workers of many nodes claim side by side and never take the same row); every
later change names the lease token, so a worker whose lease expired and was taken over changes nothing.
A dead letter is a parked row: replay puts it back on the queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from typing import Any, Callable

from ...core import events
from ...core.exceptions import InvalidPayload, NotFound, PayloadTooLarge, RegistryError
from ...core.ports import QueueWork
from ...core.records import INVOKE, POST, DeadLetter, FunctionRef, QueuedEvent
from .database import Database

#: Lambda's asynchronous payload limit (reference §3.3)
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_INVOCATION_ID = 256
#: Lambda's window in which a repeated invocation id is not queued again (the manifest's queue.idempotency_window_s)
IDEMPOTENCY_WINDOW_S = 300.0

def check_payload(payload: bytes) -> None:
    """Refuse, with a typed error saying what is wrong, a payload that is not an event document (JSON, as for a
    synchronous invoke) or is over the asynchronous limit."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_BYTES)
    try:
        events.event_from_json(payload)
    except events.ResultError as exc:
        raise InvalidPayload(str(exc)) from None


SCHEMA = """
CREATE TABLE IF NOT EXISTS async_events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BLOB NOT NULL,
    source TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    last_response TEXT,
    lease_until REAL,
    lease_token TEXT
);
CREATE INDEX IF NOT EXISTS async_events_due ON async_events (due_at);
CREATE TABLE IF NOT EXISTS async_invocation_ids (
    function TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (function, invocation_id)
);
CREATE INDEX IF NOT EXISTS async_invocation_ids_age ON async_invocation_ids (created_at);
CREATE TABLE IF NOT EXISTS async_dead_letters (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BLOB NOT NULL,
    record TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


class _SqlQueueWork:
    """QueueWork inside one open transaction of the queue's database."""

    def __init__(self, queue: "SqlEventQueue", conn: Any) -> None:
        self._queue = queue
        self._conn = conn

    def enqueue(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api", enqueued_at: float | None = None) -> str:
        return self._queue.enqueue(ref, payload, invocation_id=invocation_id, source=source, conn=self._conn, enqueued_at=enqueued_at)

    def add_post(self, url: str, function: str, record: dict[str, Any], request_id: str) -> str:
        row_id = str(uuid.uuid4())
        now = time.time()
        _insert(self._conn, row_id, POST, url, function, json.dumps(record).encode(), f"destination:{request_id}", now, now)
        return row_id

    def park(self, event: QueuedEvent, record: dict[str, Any], reason: str) -> None:
        self._conn.execute(
            "INSERT INTO async_dead_letters (id, kind, target, function, payload, record, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, target = excluded.target, function = excluded.function, payload = excluded.payload, "
            "record = excluded.record, reason = excluded.reason, created_at = excluded.created_at",
            (event.id, event.kind, event.target, event.function, event.payload, json.dumps(record), reason, time.time()),
        )


class SqlEventQueue:
    """The queue in the control database (database.Database)."""

    def __init__(self, db: Database, idempotency_window_s: float = IDEMPOTENCY_WINDOW_S) -> None:
        self.db = db
        self.idempotency_window_s = idempotency_window_s
        db.ensure_schema("async-queue", SCHEMA)

    def _in(self, conn: Any | None) -> Any:
        """The caller's transaction when given, else a new one."""
        if conn is not None:
            return contextlib.nullcontext(conn)
        return self.db.transaction()

    # --- submitting ---------------------------------------------------------------------------------

    def enqueue(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api",
                conn: Any | None = None, enqueued_at: float | None = None) -> str:
        """Put an event for `ref` on the queue (committed on return, or with the caller's `conn`); its request id.

        `enqueued_at` (default now) is when the event's age starts: a schedule's late tick passes its tick time."""
        return self.submit(ref, payload, invocation_id=invocation_id, source=source, conn=conn, enqueued_at=enqueued_at)[0]

    def submit(self, ref: str, payload: bytes, *, invocation_id: str | None = None, source: str = "api",
               conn: Any | None = None, enqueued_at: float | None = None) -> tuple[str, bool]:
        """As `enqueue`, and whether `invocation_id` was seen within the idempotency window (then nothing is queued)."""
        check_payload(payload)
        if invocation_id is not None and not 1 <= len(invocation_id) <= MAX_INVOCATION_ID:
            raise RegistryError(f"an invocation id has 1 to {MAX_INVOCATION_ID} characters (got {len(invocation_id)})")
        name = FunctionRef.parse(ref).name
        now = time.time()
        request_id = str(uuid.uuid4())
        with self._in(conn) as c:
            if invocation_id is not None:
                c.execute("DELETE FROM async_invocation_ids WHERE created_at < ?", (now - self.idempotency_window_s,))
                row = c.execute("SELECT request_id FROM async_invocation_ids WHERE function = ? AND invocation_id = ?", (name, invocation_id)).fetchone()
                if row is not None:
                    return row["request_id"], True
                c.execute("INSERT INTO async_invocation_ids (function, invocation_id, request_id, created_at) VALUES (?, ?, ?, ?)",
                          (name, invocation_id, request_id, now))
            _insert(c, request_id, INVOKE, ref, name, payload, source, enqueued_at if enqueued_at is not None else now, now)
        return request_id, False

    # --- delivering ---------------------------------------------------------------------------------

    def claim(self, lease_for: Callable[[QueuedEvent], float]) -> QueuedEvent | None:
        """Lease the most overdue row that nobody holds; `lease_for(row)` says for how long (seconds)."""
        now = time.time()
        with self.db.transaction(serial=False) as conn:
            row = conn.execute(
                "SELECT * FROM async_events WHERE due_at <= ? AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at LIMIT 1" + self.db.skip_locked,
                (now, now),
            ).fetchone()
            if row is None:
                return None
            event = _event(row)
            token = str(uuid.uuid4())
            conn.execute("UPDATE async_events SET lease_until = ?, lease_token = ? WHERE id = ?", (now + lease_for(event), token, event.id))
        return dataclasses.replace(event, lease_token=token)

    def renew(self, event: QueuedEvent, lease_s: float) -> bool:
        """Extend the lease of a row still being worked on; False if it was lost."""
        with self.db.transaction(serial=False) as conn:
            cur = conn.execute("UPDATE async_events SET lease_until = ? WHERE id = ? AND lease_token = ?", (time.time() + lease_s, event.id, event.lease_token))
            return bool(cur.rowcount == 1)

    def retry(self, event: QueuedEvent, due_at: float, *, attempts: int, throttles: int, last_response: dict[str, Any]) -> bool:
        """Put a leased row back, due at `due_at`, with its new counts; False if the lease was lost."""
        with self.db.transaction(serial=False) as conn:
            cur = conn.execute(
                "UPDATE async_events SET due_at = ?, attempts = ?, throttles = ?, last_response = ?, lease_until = NULL, lease_token = NULL"
                " WHERE id = ? AND lease_token = ?",
                (due_at, attempts, throttles, json.dumps(last_response), event.id, event.lease_token),
            )
            return bool(cur.rowcount == 1)

    def finish(self, event: QueuedEvent, then: Callable[[QueueWork], None] | None = None) -> bool:
        """Remove a leased row and run `then` (send its record on) in the same transaction; False if the lease was lost."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM async_events WHERE id = ? AND lease_token = ?", (event.id, event.lease_token))
            if cur.rowcount != 1:
                return False
            if then is not None:
                then(_SqlQueueWork(self, conn))
        return True

    def work(self, conn: Any) -> QueueWork:
        """QueueWork in a transaction another store of the same database holds (the scheduler's)."""
        return _SqlQueueWork(self, conn)

    # --- inspecting and replaying -------------------------------------------------------------------

    def stats(self) -> tuple[int, float | None]:
        """(events waiting for delivery, enqueued_at of the oldest or None): the queue-depth and age gauges."""
        row = self.db.query("SELECT COUNT(*), MIN(enqueued_at) FROM async_events WHERE kind = 'invoke'")[0]
        return int(row[0]), row[1]

    def pending(self, function: str | None = None) -> list[QueuedEvent]:
        sql, params = _filtered("SELECT * FROM async_events", function, "ORDER BY due_at")
        return [_event(r) for r in self.db.query(sql, params)]

    def dead_letters(self, function: str | None = None) -> list[DeadLetter]:
        sql, params = _filtered("SELECT * FROM async_dead_letters", function, "ORDER BY created_at")
        return [_dead_letter(r) for r in self.db.query(sql, params)]

    def replay(self, ids: list[str] | None, function: str | None = None) -> list[tuple[str, str]]:
        """Queue dead letters again as new rows (all of them when `ids` is None), each removed in the same
        transaction that queues it; returns (dead letter id, new request id) pairs."""
        replayed: list[tuple[str, str]] = []
        now = time.time()
        with self.db.transaction() as conn:
            sql, params = _filtered("SELECT * FROM async_dead_letters", function, "ORDER BY created_at")
            rows = {r["id"]: _dead_letter(r) for r in conn.execute(sql, params)}
            for dead_id in ids if ids is not None else list(rows):
                letter = rows.get(dead_id)
                if letter is None:
                    where = f" of function {function!r}" if function else ""
                    raise NotFound(f"no dead letter {dead_id!r}{where}; list them with: edgefn dlq list")
                new_id = str(uuid.uuid4())
                _insert(conn, new_id, letter.kind, letter.target, letter.function, letter.payload, f"replay:{dead_id}", now, now)
                conn.execute("DELETE FROM async_dead_letters WHERE id = ?", (dead_id,))
                replayed.append((dead_id, new_id))
        return replayed


def _insert(conn: Any, row_id: str, kind: str, target: str, function: str, payload: bytes, source: str, enqueued_at: float, due_at: float) -> None:
    conn.execute(
        "INSERT INTO async_events (id, kind, target, function, payload, source, enqueued_at, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, kind, target, function, payload, source, enqueued_at, due_at),
    )


def _filtered(sql: str, function: str | None, order: str) -> tuple[str, tuple[Any, ...]]:
    if function is None:
        return f"{sql} {order}", ()
    return f"{sql} WHERE function = ? {order}", (function,)


def _event(r: Any) -> QueuedEvent:
    last = json.loads(r["last_response"]) if r["last_response"] else None
    return QueuedEvent(r["id"], r["kind"], r["target"], r["function"], bytes(r["payload"]), r["source"], r["enqueued_at"], r["due_at"],
                       r["attempts"], r["throttles"], last, r["lease_token"])


def _dead_letter(r: Any) -> DeadLetter:
    return DeadLetter(r["id"], r["kind"], r["target"], r["function"], bytes(r["payload"]), json.loads(r["record"]), r["reason"], r["created_at"])
