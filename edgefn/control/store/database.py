"""What the control plane's stores need of a database: the one seam between the SQL and the engine.

The stores (registry.py, queue.py, schedules.py, …) are written once, in the SQL both engines accept, with `?`
placeholders. Two engines implement `Database`: SQLite, the embedded default (sqlite.py), and PostgreSQL, for
a fleet of nodes on one database (postgres/). A connection a transaction yields answers `execute(sql,
params)` with a cursor (`fetchone`, `fetchall`, `rowcount`) and `executemany`; its rows are read by column
name or by position.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Database"]


class Database(Protocol):
    #: where it is, as a user names it (a file path or a URL without its password)
    location: str
    #: appended to a claim's SELECT: "" where the transaction already excludes other writers (SQLite),
    #: " FOR UPDATE SKIP LOCKED" where workers claim rows side by side (PostgreSQL)
    skip_locked: str

    def ensure_schema(self, name: str, statements: str) -> None:
        """A store's SQLite tables (idempotent statements); an engine with versioned migrations ignores it."""
        ...

    def transaction(self, serial: bool = True) -> AbstractContextManager[Any]:
        """A write transaction, committed when the block ends, rolled back on any exception. `serial`: no other
        serial transaction of the same control plane runs beside it (read-modify-write of the registry);
        the queue's lease changes pass False and rely on row locks."""
        ...

    def read(self) -> AbstractContextManager[Any]:
        """One read-only transaction: a consistent view across the tables."""
        ...

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one read, outside any transaction."""
        ...

    def close(self) -> None: ...
