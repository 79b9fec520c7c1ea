"""What the host functions of one running invocation may see: its env, its log sink, its grants.

An invocation runs synchronously on one worker thread, so the host functions find its context in a
thread-local (`current_context`); WASI output arrives on wasmtime's I/O threads instead and goes through
the instance's LogSlot (runtime/instance.py).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ..core.ports import KeyValueStore
from ..core.tracing import TraceContext, Tracer

if TYPE_CHECKING:
    from .scratch import ScratchDirectory

__all__ = [
    "MAX_LOG_BYTES_PER_INVOCATION", "MAX_LOG_LINE", "MIN_MASKED_SECRET", "InvocationContext", "KvGrant", "SecretMask", "current_context", "escape_guest_text",
    "set_current_context",
]

MAX_LOG_LINE = 4096
MAX_LOG_BYTES_PER_INVOCATION = 64 * 1024

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_guest_text(text: str) -> str:
    """Control characters (newlines, tabs, ANSI escapes) as visible escapes: a guest line stays one line."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"), text)


@dataclass
class KvGrant:
    """What one invocation may do with the key-value store (runtime/host/kv.py), and what it has done so far."""

    store: KeyValueStore
    namespaces: tuple[str, ...]
    max_ops: int
    max_bytes: int
    ops: int = 0
    bytes: int = 0


#: secrets shorter than this are not masked in log lines (masking "a" would blank every line)
MIN_MASKED_SECRET = 4
MASKED = "***"


class SecretMask:
    """Replaces a function's secret values in text with *** (its log lines, its error messages), so a guest that
    prints a secret by mistake does not publish it (GitHub Actions' rule for logs)."""

    __slots__ = ("values",)

    def __init__(self, values: Iterable[str]) -> None:
        # longest first: a secret containing another is masked whole
        self.values = tuple(sorted({v for v in values if len(v) >= MIN_MASKED_SECRET}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASKED)
        return text

    def __bool__(self) -> bool:
        return bool(self.values)


class InvocationContext:
    """What the host functions of one running invocation may see: its env and its log sink."""

    __slots__ = (
        "function", "request_id", "env", "emit", "log_bytes", "dropped_lines", "_partial",
        "allowed_hosts", "deadline", "fetches", "pending_fetch", "io_gate", "kv", "pending_kv", "mask", "scratch", "trace",
    )

    def __init__(
        self,
        function: str,
        request_id: str,
        env: dict[str, bytes],
        emit: Callable[[int, str], None],
        allowed_hosts: tuple[str, ...] = (),
        deadline: float = float("inf"),
        io_gate: tuple[Callable[[], None], Callable[[], None]] | None = None,
        kv: KvGrant | None = None,
        mask: SecretMask | None = None,
    ) -> None:
        self.function = function
        self.request_id = request_id
        self.env = env
        self.emit = emit
        self.log_bytes = 0
        self.dropped_lines = 0
        self._partial: dict[int, bytes] = {}
        self.allowed_hosts = allowed_hosts
        self.deadline = deadline  # time.monotonic() when the wall-clock limit runs out
        self.fetches = 0
        self.pending_fetch: bytes | None = None
        #: (suspend, resume): give the CPU slot back while waiting on the network (runtime/scheduler.py)
        self.io_gate = io_gate
        #: the key-value namespaces granted, the store and the budgets (runtime/host/kv.py); None: no grant
        self.kv = kv
        self.pending_kv: bytes | None = None
        #: hides the function's secret values in every line this invocation logs
        self.mask = mask if mask else None
        #: the instance's /tmp (runtime/host/scratch.py); None: the guest has no WASI
        self.scratch: ScratchDirectory | None = None
        #: the invocation's span context and the tracer its guest fetches open theirs with (None: no trace)
        self.trace: tuple[TraceContext, Tracer] | None = None

    def write_log(self, level: int, data: bytes) -> None:
        """One guest log record: one line, its control characters escaped (a guest cannot start a line)."""
        if self.log_bytes >= MAX_LOG_BYTES_PER_INVOCATION:
            self.dropped_lines += 1
            return
        if self.mask is not None:  # before the cut: a secret across the 4 KiB mark is masked whole
            data = self.mask(data.decode("utf-8", "replace")).encode()
        data = data[:MAX_LOG_LINE]
        self.log_bytes += len(data)
        self.emit(level, escape_guest_text(data.decode("utf-8", "replace")))

    def note(self, level: int, text: str) -> None:
        """A line of edgefn's own about this invocation: tab-marked, which no escaped guest line can be."""
        self.emit(level, f"[edgefn]\t{self.mask(text) if self.mask is not None else text}")

    def _write_stream(self, level: int, data: bytes) -> int:
        # WASI stdout/stderr: one log line per written line; a partial line waits for its newline or the end
        *lines, rest = (self._partial.pop(level, b"") + data).split(b"\n")
        for line in lines:
            self.write_log(level, line)
        if rest:
            self._partial[level] = rest
        return len(data)

    def stdout(self, data: bytes) -> int:
        return self._write_stream(1, data)

    def stderr(self, data: bytes) -> int:
        return self._write_stream(2, data)

    def flush(self) -> None:
        for level, rest in sorted(self._partial.items()):
            self.write_log(level, rest)
        self._partial.clear()
        if self.dropped_lines:
            self.note(2, f"{self.dropped_lines} log lines dropped: over {MAX_LOG_BYTES_PER_INVOCATION} bytes in one invocation")
            self.dropped_lines = 0


#: the invocation running on this thread: invocations are synchronous on one worker thread each
_current = threading.local()


def current_context() -> InvocationContext:
    ctx: InvocationContext = _current.ctx
    return ctx


def set_current_context(ctx: InvocationContext | None) -> None:
    _current.ctx = ctx

