"""LISTEN on the control database's change channel (schema.CHANNEL): a node hears a commit of any node at once."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .schema import CHANNEL

__all__ = ["PostgresChangeFeed"]

log = logging.getLogger("edgefn.control.changes")
RECONNECT_S = 1.0


class PostgresChangeFeed:
    """A thread holding one connection that LISTENs; reconnects after a failure (the poll covers the gap)."""

    def __init__(self, conninfo: str, schema_of: Callable[[Any], str]) -> None:
        self._conninfo = conninfo
        self._schema_of = schema_of
        self._listeners: list[Callable[[str], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edgefn-control-listen", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    schema = self._schema_of(conn)
                    conn.execute(f"LISTEN {CHANNEL}")
                    for listener in list(self._listeners):  # anything committed while not listening
                        listener("registry")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            where, _, topic = note.payload.partition(" ")
                            if where == schema:
                                for listener in list(self._listeners):
                                    listener(topic)
            except Exception as exc:  # the database went away: the node polls meanwhile
                log.debug("change feed interrupted, reconnecting: %s", exc)
                self._stop.wait(RECONNECT_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
