"""W3C trace context, and the seam spans are recorded through (docs/tracing.md).

Every request has a trace: the viewer's `traceparent` continued, or a new one. Its context goes to the origin
and to every guest fetch as `traceparent`, and its trace id into the REPORT lines and the access log, whether
or not spans are exported. The data path opens spans through a `Tracer`: `UNTRACED` (the default) records
nothing and only makes the child contexts propagation needs; observability/tracing.py's exports them over OTLP.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["TRACEPARENT", "UNTRACED", "Span", "TraceContext", "Tracer", "Untraced"]

TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: trace and span ids need to be unique, not secret: a PRNG, not a syscall per request
_ids = random.Random()


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Which trace a piece of work belongs to, and which span it is (W3C Trace Context level 1)."""

    trace_id: int
    span_id: int
    sampled: bool = True

    @classmethod
    def parse(cls, header: str | None) -> "TraceContext | None":
        """A `traceparent` header's context, or None if it is absent or malformed (then a new trace starts)."""
        m = _TRACEPARENT.fullmatch(header.strip().lower()) if header else None
        if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
            return None
        trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
        if not trace_id or not span_id:
            return None
        return cls(trace_id, span_id, bool(int(m.group(4), 16) & 1))

    @classmethod
    def new(cls, sampled: bool = True) -> "TraceContext":
        return cls(_ids.getrandbits(128) or 1, _ids.getrandbits(64) or 1, sampled)

    def child(self) -> "TraceContext":
        """A new span in the same trace."""
        return TraceContext(self.trace_id, _ids.getrandbits(64) or 1, self.sampled)

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_hex(self) -> str:
        return f"{self.span_id:016x}"

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"


class Span(Protocol):
    """One span being recorded: its context (for children and for propagation), attributes, an error, its end."""

    @property
    def context(self) -> TraceContext: ...

    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def fail(self, message: str) -> None: ...

    def end(self) -> None: ...


class Tracer(Protocol):
    """Opens spans: a child of `parent`, or the root of a new trace (kind: server, client, consumer, internal)."""

    @property
    def exporting(self) -> bool: ...

    def span(self, name: str, parent: TraceContext | None, kind: str = "internal", attributes: dict[str, Any] | None = None) -> Span: ...

    def close(self) -> None: ...


class _ContextOnly:
    """A span that is only its context: what propagation needs when nothing is exported."""

    __slots__ = ("context",)

    def __init__(self, context: TraceContext) -> None:
        self.context = context

    def set(self, key: str, value: str | int | float | bool) -> None:
        pass

    def fail(self, message: str) -> None:
        pass

    def end(self) -> None:
        pass


class Untraced:
    """The default tracer: records nothing; contexts still propagate."""

    exporting = False

    def span(self, name: str, parent: TraceContext | None, kind: str = "internal", attributes: dict[str, Any] | None = None) -> Span:
        return _ContextOnly(parent.child() if parent is not None else TraceContext.new())

    def close(self) -> None:
        pass


UNTRACED: Tracer = Untraced()
