"""The log of cache purges in the control database: appended by `edgefn cache purge` and the admin API, read
by every server process's follower (node.py) from the last id it applied."""

from __future__ import annotations

import time

from ...core.records import PURGE_KINDS, CachePurge
from .database import Database

__all__ = ["KEEP_S", "SqlPurgeLog"]

#: purges older than this are forgotten (a process that started since has an empty cache anyway)
KEEP_S = 86_400

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


class SqlPurgeLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("cache-purges", SCHEMA)

    def add(self, kind: str, value: str) -> CachePurge:
        assert kind in PURGE_KINDS, kind
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM cache_purges WHERE created_at < ?", (now - KEEP_S,))
            cur = conn.execute("INSERT INTO cache_purges (kind, value, created_at) VALUES (?, ?, ?) RETURNING id", (kind, value, now))
            return CachePurge(int(cur.fetchone()[0]), kind, value, now)

    def since(self, after_id: int) -> list[CachePurge]:
        rows = self.db.query("SELECT id, kind, value, created_at FROM cache_purges WHERE id > ? ORDER BY id", (after_id,))
        return [CachePurge(int(r["id"]), r["kind"], r["value"], float(r["created_at"])) for r in rows]

    def last_id(self) -> int:
        rows = self.db.query("SELECT COALESCE(MAX(id), 0) AS last FROM cache_purges")
        return int(rows[0]["last"])
