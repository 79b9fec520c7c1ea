"""The key-value store on PostgreSQL, for many nodes sharing one database (`[kv] store = "postgresql://…"`).

Workers KV's model: writes go to the database at once; a node serves reads from its own cache, each entry for at
most `cache_ttl_s` (the staleness bound, docs/kv.md), so a hot key costs no round trip. A node's own writes and
deletes update its cache as they commit (a node reads its own writes). `cache_ttl_s = 0` reads the database every
time (strongly consistent). Lists always read the database.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from ....core.exceptions import StorageError
from ....core.records import KV_MAX_LIST_LIMIT, KvPage
from ..kv import ListQuery

__all__ = ["CACHE_MAX_BYTES", "CACHE_MAX_VALUE_BYTES", "OP_TIMEOUT_S", "PostgresKeyValueStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS edgefn_kv (
    namespace text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    expires_at double precision,
    updated_at double precision NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS edgefn_kv_expiry ON edgefn_kv (expires_at) WHERE expires_at IS NOT NULL
"""

#: bytes of values one node's read cache holds (least recently used go first)
CACHE_MAX_BYTES = 64 * 1024 * 1024
#: values larger than this are not cached (one would push out thousands of small ones)
CACHE_MAX_VALUE_BYTES = 1024 * 1024
_SWEEP = 16
#: the longest a call waits for a connection or the server (a guest is waiting on it; the database may be down)
OP_TIMEOUT_S = 2.0


class _ReadCache:
    """(namespace, key) -> (value or None for "absent", until when it may be served): bounded, least recently used out."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, bytes], tuple[bytes | None, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, ns: str, key: bytes) -> tuple[bool, bytes | None]:
        with self._lock:
            hit = self._entries.get((ns, key))
            if hit is None:
                return False, None
            if hit[1] <= time.monotonic():
                self._drop((ns, key))
                return False, None
            self._entries.move_to_end((ns, key))
            return True, hit[0]

    def set(self, ns: str, key: bytes, value: bytes | None, expires_at: float | None) -> None:
        if self.ttl_s <= 0 or (value is not None and len(value) > CACHE_MAX_VALUE_BYTES):
            self.forget(ns, key)
            return
        life = self.ttl_s if expires_at is None else min(self.ttl_s, expires_at - time.time())
        with self._lock:
            self._drop((ns, key))
            if life <= 0:
                return
            self._entries[(ns, key)] = (value, time.monotonic() + life)
            self._bytes += len(key) + len(value or b"")
            while self._bytes > CACHE_MAX_BYTES and self._entries:
                self._drop(next(iter(self._entries)))

    def forget(self, ns: str, key: bytes) -> None:
        with self._lock:
            self._drop((ns, key))

    def _drop(self, k: tuple[str, bytes]) -> None:
        old = self._entries.pop(k, None)
        if old is not None:
            self._bytes -= len(k[1]) + len(old[0] or b"")


class PostgresKeyValueStore:
    """Namespaces of byte keys in one PostgreSQL table, behind a per-process read cache (see the module's docstring)."""

    remote = True

    def __init__(self, url: str, cache_ttl_s: float = 1.0, pool_size: int = 4) -> None:
        try:
            import psycopg  # noqa: F401 - the `postgres` extra
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StorageError("a postgresql:// key-value store needs psycopg: pip install 'edgefn[postgres]'") from None
        self.url = url
        self.cache = _ReadCache(cache_ttl_s)
        self._pool: Any = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=OP_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(OP_TIMEOUT_S), "options": f"-c statement_timeout={int(OP_TIMEOUT_S * 1000)}"},
        )
        try:
            self._pool.open(wait=True, timeout=10.0)
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('edgefn_kv schema'))")  # two nodes creating it at once
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except Exception as exc:
            self._pool.close()
            raise StorageError(f"cannot open the key-value store at {_redacted(url)}: {exc}") from None

    def get(self, namespace: str, key: bytes) -> bytes | None:
        hit, value = self.cache.get(namespace, key)
        if hit:
            return value
        now = time.time()
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT value, expires_at FROM edgefn_kv WHERE namespace = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)",
                (namespace, key, now),
            ).fetchone()
        value, expires_at = (None, None) if row is None else (bytes(row[0]), row[1])
        self.cache.set(namespace, key, value, expires_at)
        return value

    def put(self, namespace: str, key: bytes, value: bytes, ttl_s: float | None = None) -> None:
        now = time.time()
        expires_at = None if ttl_s is None else now + ttl_s
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO edgefn_kv (namespace, key, value, expires_at, updated_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                (namespace, key, value, expires_at, now),
            )
            conn.execute(
                "DELETE FROM edgefn_kv WHERE (namespace, key) IN "
                "(SELECT namespace, key FROM edgefn_kv WHERE expires_at IS NOT NULL AND expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                (now, _SWEEP),
            )
        self.cache.set(namespace, key, value, expires_at)

    def delete(self, namespace: str, key: bytes) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "DELETE FROM edgefn_kv WHERE namespace = %s AND key = %s RETURNING expires_at IS NULL OR expires_at > %s", (namespace, key, time.time())
            )
            row = cur.fetchone()
        self.cache.set(namespace, key, None, None)
        return bool(row and row[0])

    def list(self, namespace: str, prefix: bytes = b"", cursor: str | None = None, limit: int = KV_MAX_LIST_LIMIT) -> KvPage:
        q = ListQuery("edgefn_kv", "%s", namespace, prefix, cursor, limit, time.time())
        with self._pool.connection() as conn:
            return q.page(conn.execute(q.sql, q.params).fetchall())

    def close(self) -> None:
        self._pool.close()


def _redacted(url: str) -> str:
    """The URL without its password (an error message must not print one)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
