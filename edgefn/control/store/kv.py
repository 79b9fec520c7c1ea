"""The key-value store on SQLite, the embedded default: one file beside the control database (`[kv] store`).

Every server process and CLI command opens the same file, so a put is seen by the next get anywhere on the node
(strongly consistent: no cache in front of it). An expired key reads as absent at once; its row is swept later,
a few at a time, by puts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...core.records import KV_MAX_LIST_LIMIT, KvPage
from .sqlite import SqliteDatabase

__all__ = ["ListQuery", "SqliteKeyValueStore", "decode_cursor", "encode_cursor", "prefix_end"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL
"""

#: expired rows one put removes (the sweep stays a bounded cost of a write)
_SWEEP = 16


def encode_cursor(last_key: bytes) -> str:
    """A list cursor: the last key returned, in hex (opaque to callers, safe in a URL)."""
    return last_key.hex()


def decode_cursor(cursor: str | None) -> bytes:
    if not cursor:
        return b""
    try:
        return bytes.fromhex(cursor)
    except ValueError:
        raise ValueError(f"{cursor!r} is not a cursor a list returned") from None


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with `prefix` (None: no bound, the prefix is all 0xff bytes)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


class ListQuery:
    """One page of a list by prefix as SQL, in either backend's placeholder style (`?` or `%s`): the WHERE clause and
    its parameters, and the page made of the rows it returned (one row past the page says there is a next one)."""

    def __init__(self, table: str, mark: str, namespace: str, prefix: bytes, cursor: str | None, limit: int, now: float) -> None:
        self.limit = max(1, min(limit, KV_MAX_LIST_LIMIT))
        end = prefix_end(prefix)
        self.sql = (
            f"SELECT key FROM {table} WHERE namespace = {mark} AND key >= {mark} AND key > {mark} AND (expires_at IS NULL OR expires_at > {mark})"
            + (f" AND key < {mark}" if end is not None else "") + f" ORDER BY key LIMIT {mark}"
        )
        self.params: tuple[object, ...] = (namespace, prefix, decode_cursor(cursor), now, *((end,) if end is not None else ()), self.limit + 1)

    def page(self, rows: list[Any]) -> KvPage:
        keys = tuple(bytes(r[0]) for r in rows[: self.limit])
        return KvPage(keys, encode_cursor(keys[-1]) if len(rows) > self.limit else None)


class SqliteKeyValueStore:
    """Namespaces of byte keys in one SQLite file, one connection per thread (sqlite.Database)."""

    remote = False

    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, "the key-value store")
        self.db.ensure_schema("kv", SCHEMA)

    def get(self, namespace: str, key: bytes) -> bytes | None:
        row = self.db.connection().execute(
            "SELECT value FROM kv WHERE namespace = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)", (namespace, key, time.time())
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: bytes, value: bytes, ttl_s: float | None = None) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                (namespace, key, value, None if ttl_s is None else now + ttl_s, now),
            )
            conn.execute(
                "DELETE FROM kv WHERE (namespace, key) IN (SELECT namespace, key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (now, _SWEEP),
            )

    def delete(self, namespace: str, key: bytes) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)", (namespace, key, time.time()))
            conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
            return cur.rowcount > 0

    def list(self, namespace: str, prefix: bytes = b"", cursor: str | None = None, limit: int = KV_MAX_LIST_LIMIT) -> KvPage:
        q = ListQuery("kv", "?", namespace, prefix, cursor, limit, time.time())
        return q.page(self.db.connection().execute(q.sql, q.params).fetchall())

    def close(self) -> None:
        self.db.close()
