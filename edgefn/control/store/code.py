"""Deployed code in the control database, once per sha256: a node fetches what its module store lacks."""

from __future__ import annotations

import time

from .database import Database

__all__ = ["PRUNE_AFTER_S", "SqlCodeStore"]

#: code younger than this is never pruned: a deploy puts its code here before the registry names it
PRUNE_AFTER_S = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS code_blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL, created_at REAL NOT NULL)
"""


class SqlCodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("code", SCHEMA)

    def missing(self, digests: set[str]) -> set[str]:
        if not digests:
            return set()
        marks = ", ".join("?" * len(digests))
        have = {r["digest"] for r in self.db.query(f"SELECT digest FROM code_blobs WHERE digest IN ({marks})", tuple(sorted(digests)))}
        return digests - have

    def put(self, digest: str, data: bytes) -> None:
        with self.db.transaction(serial=False) as conn:
            conn.execute(
                "INSERT INTO code_blobs (digest, size, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
                (digest, len(data), data, time.time()),
            )

    def prune(self, keep: set[str], dry_run: bool = False) -> tuple[int, int]:
        """Remove the code of digests not in `keep` (what the registry may run) stored over PRUNE_AFTER_S ago;
        (how many, their bytes)."""
        before = time.time() - PRUNE_AFTER_S
        with self.db.transaction() as conn:
            rows = [r for r in conn.execute("SELECT digest, size FROM code_blobs WHERE created_at < ?", (before,)).fetchall() if r["digest"] not in keep]
            if not dry_run:
                conn.executemany("DELETE FROM code_blobs WHERE digest = ?", [(r["digest"],) for r in rows])
        return len(rows), sum(int(r["size"]) for r in rows)

    def get(self, digest: str) -> bytes | None:
        rows = self.db.query("SELECT data FROM code_blobs WHERE digest = ?", (digest,))
        return bytes(rows[0]["data"]) if rows else None
