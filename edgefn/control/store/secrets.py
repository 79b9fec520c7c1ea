"""Secrets in the control database, sealed (control/secrets.py encrypts; only ciphertext is stored here).

Each put is a new generation of the name; $LATEST reads the current one, a published version the generation that
was current when it was published (the registry's publish copies the references into `version_secrets`). A
delete ends the name for $LATEST; generations no version references are wiped at once. Every write bumps the
registry's revision, so running servers pick the change up as they do a deploy.
"""

from __future__ import annotations

import time
from typing import Any

from ...core.records import SealedSecret
from .database import Database
from .registry import _bump

__all__ = ["SqlSecretStore"]


class SqlSecretStore:
    def __init__(self, db: Database) -> None:
        self.db = db  # the tables are the registry's (registry.SCHEMA): a publish captures references in its transaction

    def put(self, function: str, name: str, nonce: bytes, ciphertext: bytes) -> SealedSecret:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT COALESCE(MAX(generation), 0) FROM secrets WHERE function = ? AND name = ?", (function, name)).fetchone()
            generation = int(row[0]) + 1
            conn.execute("UPDATE secrets SET current = 0 WHERE function = ? AND name = ?", (function, name))
            conn.execute(
                "INSERT INTO secrets (function, name, generation, nonce, ciphertext, current, created_at) VALUES (?, ?, ?, ?, ?, 1, ?)",
                (function, name, generation, nonce, ciphertext, time.time()),
            )
            _wipe_unreferenced(conn, function, name)
            _bump(conn)
        return SealedSecret(function, name, generation, nonce, ciphertext)

    def delete(self, function: str, name: str) -> bool:
        with self.db.transaction() as conn:
            ended = conn.execute("UPDATE secrets SET current = 0 WHERE function = ? AND name = ? AND current = 1", (function, name)).rowcount > 0
            _wipe_unreferenced(conn, function, name)
            if ended:
                _bump(conn)
        return bool(ended)

    def names(self, function: str) -> list[tuple[str, float]]:
        rows = self.db.query("SELECT name, created_at FROM secrets WHERE function = ? AND current = 1 ORDER BY name", (function,))
        return [(r["name"], float(r["created_at"])) for r in rows]


def _wipe_unreferenced(conn: Any, function: str, name: str) -> None:
    """Old generations neither $LATEST nor any published version reads: their ciphertext goes."""
    conn.execute(
        "DELETE FROM secrets WHERE function = ? AND name = ? AND current = 0 AND generation NOT IN "
        "(SELECT generation FROM version_secrets WHERE function = ? AND name = ?)",
        (function, name, function, name),
    )
