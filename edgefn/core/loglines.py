"""Log lines handed to edgefn's own handlers without a LogRecord, where nothing on the route needs one.

A record costs about as much as a fresh wasm instance (LogRecord, Logger.handle, every Handler.handle and its
lock), and every request makes several: each invocation's START / END / REPORT and the request's access line.
edgefn's handlers (the function log files, the batched stderr writer, the admin API's log tail) take lines as
text (`LineHandler`). Where every handler on a logger's route is one, and no filter sits on it, `log_lines`
gives them the lines straight; anything else on the route (pytest's caplog, a filter, the JSON format, a
handler of the user's) gets the very same lines as one record, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol, cast

__all__ = ["LINES", "LineHandler", "log_lines", "record_lines"]

#: set (True) on a log record whose message is several log lines, one per "\n": an invocation's START, END and
#: REPORT are one record (one pass through logging instead of three), and every handler of function logs
#: writes it as the lines it holds
LINES = "edgefn_lines"
_LINES = {LINES: True}


def record_lines(record: logging.LogRecord) -> list[str]:
    """The log lines a record holds: its message, or each line of it for a LINES record."""
    message = record.getMessage()
    return message.split("\n") if getattr(record, LINES, False) else [message]


class LineHandler(Protocol):
    """A logging.Handler that can write lines without a record. `takes_lines` may be a property: False while
    the handler is configured so that it needs the record (its own format, say)."""

    takes_lines: bool

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def emit_lines(self, logger: str, level: int, created: float, lines: Sequence[str]) -> None:
        """Write `lines` as the record path would have written them (called with the handler's lock held)."""


def _direct_route(logger: logging.Logger, level: int) -> list[LineHandler] | None:
    """The handlers a record of `logger` at `level` would reach, if each takes lines; None if any does not
    (or none would: logging's last resort then decides)."""
    if logger.disabled or logger.filters:  # as Logger.handle: only the origin's own filters apply
        return None
    route: list[LineHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level < handler.level:
                continue
            if handler.filters or not getattr(handler, "takes_lines", False):
                return None
            route.append(cast(LineHandler, handler))
        current = current.parent if current.propagate else None
    return route or None


def log_lines(logger: logging.Logger, lines: Sequence[str], level: int = logging.INFO) -> None:
    """Log `lines` (each one log line, none with a newline of its own when there are several) on `logger`:
    straight to its handlers where they all take lines, else as one record (a LINES record if several)."""
    if not logger.isEnabledFor(level):
        return
    route = _direct_route(logger, level)
    if route is None:
        if len(lines) == 1:
            logger.log(level, "%s", lines[0])
        else:
            logger.log(level, "%s", "\n".join(lines), extra=_LINES)
        return
    created = time.time()
    for handler in route:
        handler.acquire()
        try:
            handler.emit_lines(logger.name, level, created, lines)
        finally:
            handler.release()
