"""The nodes of a fleet in the control database: one row per server process, rewritten by its heartbeat."""

from __future__ import annotations

import json

from ...core.records import NodeRecord
from .database import Database

__all__ = ["FORGET_AFTER_S", "SqlNodeDirectory"]

#: a node not heard from for this long is taken off the list (a killed node never leaves by itself)
FORGET_AFTER_S = 86_400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, address TEXT NOT NULL, hostname TEXT NOT NULL, pid INTEGER NOT NULL, revision INTEGER NOT NULL,
    versions TEXT NOT NULL, started_at REAL NOT NULL, last_seen REAL NOT NULL
)
"""


class SqlNodeDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("nodes", SCHEMA)

    def heartbeat(self, node: NodeRecord) -> None:
        with self.db.transaction(serial=False) as conn:
            conn.execute(
                "INSERT INTO nodes (id, app, address, hostname, pid, revision, versions, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET address = excluded.address, revision = excluded.revision, versions = excluded.versions, "
                "last_seen = excluded.last_seen",
                (node.id, node.app, node.address, node.hostname, node.pid, node.revision, json.dumps(list(node.versions)), node.started_at, node.last_seen),
            )
            conn.execute("DELETE FROM nodes WHERE last_seen < ?", (node.last_seen - FORGET_AFTER_S,))

    def leave(self, node_id: str) -> None:
        with self.db.transaction(serial=False) as conn:
            conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def list(self) -> list[NodeRecord]:
        rows = self.db.query("SELECT * FROM nodes ORDER BY app, address, id")
        return [
            NodeRecord(r["id"], r["app"], r["address"], r["hostname"], int(r["pid"]), int(r["revision"]), tuple(json.loads(r["versions"])),
                       float(r["started_at"]), float(r["last_seen"]))
            for r in rows
        ]
