"""The log lines of one invocation (START/END/REPORT and the guest's own), for `X-Amz-Log-Type: Tail`.

The invoker writes every line of an invocation to the function's logger, each carrying the request id:
"START RequestId: <id> ...", "<id>\\t<guest line>", "END RequestId: <id>", "REPORT RequestId: <id>\\t...".
One handler per function logger collects the lines of the request ids being captured.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Iterator

from ..core.loglines import record_lines
from ..runtime.invoker import function_logger

TAIL_BYTES = 4096  # as Lambda: the last 4 KB of the invocation's log
_PREFIXES = ("START RequestId: ", "END RequestId: ", "REPORT RequestId: ")


def request_id_of(message: str) -> str:
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix):].split(None, 1)[0] if len(message) > len(prefix) else ""
    return message.split("\t", 1)[0]


class InvocationLogs(logging.Handler):
    """Collects the lines of the request ids under `capture`; lines of other invocations pass by."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self._open: dict[str, list[str]] = {}
        self._attached: set[str] = set()
        self._attach_lock = threading.Lock()

    #: a tail needs only the lines (core/loglines.py)
    takes_lines = True

    def emit(self, record: logging.LogRecord) -> None:
        if self._open:
            self.emit_lines(record.name, record.levelno, record.created, record_lines(record))

    def emit_lines(self, logger: str, level: int, created: float, lines: Sequence[str]) -> None:
        if not self._open:
            return
        captured = self._open.get(request_id_of(lines[0]))
        if captured is not None:
            captured.extend(lines)

    @contextlib.contextmanager
    def capture(self, function: str, request_id: str) -> Iterator[list[str]]:
        """The lines `function` logs for `request_id` while the block runs (on the function's own logger,
        so a log stream that stops propagation does not hide them)."""
        with self._attach_lock:
            if function not in self._attached:
                function_logger(function).addHandler(self)
                self._attached.add(function)
        lines: list[str] = []
        self._open[request_id] = lines
        try:
            yield lines
        finally:
            self._open.pop(request_id, None)

    def close(self) -> None:
        with self._attach_lock:
            for function in self._attached:
                function_logger(function).removeHandler(self)
            self._attached.clear()
        super().close()


def tail(lines: list[str], limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of the lines, base64 (the X-Amz-Log-Result header)."""
    text = "".join(f"{line}\n" for line in lines).encode()
    return base64.b64encode(text[-limit:]).decode("ascii")
