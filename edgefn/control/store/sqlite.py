"""The embedded default database of the control plane: one SQLite file shared by its stores.

`SqliteDatabase` implements database.Database: each store declares its tables with `ensure_schema` and does
each change inside `transaction()`, so a crash (even kill -9) leaves either the old or the new state. WAL
mode lets a running server read while the CLI writes; `synchronous=FULL` makes a committed write survive
power loss. Every write transaction is BEGIN IMMEDIATE, so writers are serialized whatever `serial` says.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from ...core.exceptions import StorageError

BUSY_TIMEOUT_MS = 10_000


class SqliteDatabase:
    """A SQLite file with one connection per thread; `transaction()` is the only way to write."""

    #: no row locks to skip: a claim's transaction already holds the file's write lock
    skip_locked = ""

    def __init__(self, path: Path | str, what: str = "the control database") -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._local = threading.local()
        self._schemas: set[str] = set()
        self._lock = threading.Lock()
        # writers of this process queue here and wake at once; on SQLite's lock they would poll with sleeps of 1-100 ms
        self._write_lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection().execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open {what} {self.path}: {exc}") from None

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions; transaction() issues BEGIN IMMEDIATE itself
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def ensure_schema(self, name: str, statements: str) -> None:
        """Create a store's tables once per process (`statements` must be idempotent: IF NOT EXISTS)."""
        with self._lock:
            if name in self._schemas:
                return
            with self.transaction() as conn:
                for statement in statements.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            self._schemas.add(name)

    @contextlib.contextmanager
    def transaction(self, serial: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any exception): writers queue on the lock, readers never block."""
        conn = self.connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent view across the tables while writers go on."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
