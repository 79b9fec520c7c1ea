"""The control plane on PostgreSQL: `PostgresDatabase` implements database.Database over psycopg 3.

Connections are kept per process in a small pool of our own (a connection that failed is dropped, never
reused, and a server gone away takes the kept ones with it; a new one is opened on demand, giving up after
OP_TIMEOUT_S), so a database that went away costs each call one quick failure, a `StorageError`, and once it
is back, at most one call fails on a connection that died with it. (psycopg_pool's background reconnects and
its `reconnect_timeout` made an outage's failures less predictable than this.) The schema is
created and migrated by edgefn itself (schema.py) on first use, not at open: a node whose database is down
still starts, from its local snapshot.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from ....core.exceptions import StorageError
from .changes import PostgresChangeFeed
from .schema import migrate

__all__ = ["OP_TIMEOUT_S", "PostgresDatabase", "redacted"]

#: the longest a control-plane call waits to connect, or for a statement
OP_TIMEOUT_S = 2.0
POOL_MAX = 8


def redacted(url: str) -> str:
    """The URL without its password (an error message must not print one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


class Row(tuple[Any, ...]):
    """A row read by column name or by position, as sqlite3.Row is."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _row_factory(cursor: Any) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    cls = type("Row", (Row,), {"names": names})

    def make(values: Sequence[Any]) -> Row:
        return cls(values)  # type: ignore[no-any-return]

    return make


class _Connection:
    """A psycopg connection as the stores use it: `?` placeholders, rows by name."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.cursor().executemany(sql.replace("%", "%%").replace("?", "%s"), [tuple(r) for r in rows])


class PostgresDatabase:
    """One PostgreSQL database (its schema: the URL's search_path, `public` unless it says otherwise)."""

    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StorageError("a postgresql:// control plane needs psycopg: pip install 'edgefn[postgres]'") from None
        self._psycopg = psycopg
        self.url = url
        self.location = redacted(url)
        info = psycopg.conninfo.conninfo_to_dict(url)
        # every statement bounded, on top of the URL's own options (a test's search_path)
        info["options"] = f"{info.get('options') or ''} -c statement_timeout={int(OP_TIMEOUT_S * 5000)}".strip()
        info.setdefault("connect_timeout", int(OP_TIMEOUT_S))
        self._conninfo = psycopg.conninfo.make_conninfo("", **info)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(POOL_MAX)
        self._migrated = False
        self._closed = False

    # --- connections ----------------------------------------------------------------------------------

    def _connect(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True, row_factory=_row_factory)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        if not self._slots.acquire(timeout=OP_TIMEOUT_S * 5):
            raise StorageError(f"the control database {self.location}: no connection free after {OP_TIMEOUT_S * 5:g} s")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                if not self._migrated:
                    migrate(conn, self.location)
                    self._migrated = True
            except BaseException as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                if isinstance(exc, self._psycopg.Error):
                    raise StorageError(f"the control database {self.location} is unreachable: {_first_line(exc)}") from None
                raise
            broken = False
            try:
                yield conn
            except self._psycopg.Error as exc:
                broken = True
                if isinstance(exc, self._psycopg.OperationalError):
                    self._drop_idle()  # the server went away: the other kept connections died with this one
                raise StorageError(f"the control database {self.location}: {_first_line(exc)}") from None
            finally:
                if not broken and not conn.closed and conn.info.transaction_status == self._psycopg.pq.TransactionStatus.IDLE:
                    with self._lock:
                        if not self._closed:
                            self._idle.append(conn)
                            conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
        finally:
            self._slots.release()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def change_feed(self) -> PostgresChangeFeed:
        """A LISTEN on this database's change channel, for the notifications of this schema."""
        return PostgresChangeFeed(self._conninfo, lambda conn: str(conn.execute("SELECT current_schema()").fetchone()[0]))

    # --- database.Database ----------------------------------------------------------------------------

    def ensure_schema(self, name: str, statements: str) -> None:
        """Nothing: the schema is schema.py's versioned migrations, applied on first use."""

    @contextlib.contextmanager
    def transaction(self, serial: bool = True) -> Iterator[_Connection]:
        with self._connection() as conn, conn.transaction():
            if serial:  # one read-modify-write of this control plane at a time, fleet-wide (SQLite's BEGIN IMMEDIATE)
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            yield _Connection(conn)

    @contextlib.contextmanager
    def read(self) -> Iterator[_Connection]:
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield _Connection(conn)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._connection() as conn:
            rows: list[Any] = _Connection(conn).execute(sql, params).fetchall()
            return rows

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_idle()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
