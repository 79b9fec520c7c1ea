"""Layer versions in the control database: immutable, numbered per name, their content stored by sha256."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ...core.exceptions import NotFound
from ...core.records import LayerVersion
from .database import Database

__all__ = ["SqlLayerStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS layer_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,              -- python (pure-Python packages, a zip) or wasm (a core module)
    digest TEXT NOT NULL,            -- sha256 of data
    size INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS layer_blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL)
"""


class SqlLayerStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("layers", SCHEMA)

    def publish(self, name: str, kind: str, data: bytes, description: str = "") -> LayerVersion:
        """A new version of layer `name` holding `data` (1 for a new name); the same content twice is two versions, one blob."""
        digest = hashlib.sha256(data).hexdigest()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM layer_versions WHERE name = ?", (name,)).fetchone()
            version = int(row[0]) + 1
            conn.execute("INSERT INTO layer_blobs (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING", (digest, data))
            conn.execute(
                "INSERT INTO layer_versions (name, version, kind, digest, size, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, version, kind, digest, len(data), description, time.time()),
            )
        return self.get(name, version)

    def get(self, name: str, version: int) -> LayerVersion:
        rows = self.db.query("SELECT name, version, kind, digest, size, description, created_at FROM layer_versions WHERE name = ? AND version = ?",
                             (name, version))
        if not rows:
            raise NotFound(f"layer {name}:{version} is not published (edgefn layer list shows the layers; edgefn layer publish NAME PATH adds one)")
        return _version(rows[0])

    def list(self, name: str | None = None) -> list[LayerVersion]:
        sql = "SELECT name, version, kind, digest, size, description, created_at FROM layer_versions"
        rows = self.db.query(sql + (" WHERE name = ?" if name else "") + " ORDER BY name, version", (name,) if name else ())
        return [_version(r) for r in rows]

    def data(self, digest: str) -> bytes:
        rows = self.db.query("SELECT data FROM layer_blobs WHERE digest = ?", (digest,))
        if not rows:
            raise NotFound(f"no layer content {digest[:12]} in the control database")
        return bytes(rows[0][0])


def _version(r: Any) -> LayerVersion:
    return LayerVersion(name=r[0], version=int(r[1]), kind=r[2], digest=r[3], size=int(r[4]), description=r[5], created_at=float(r[6]))
