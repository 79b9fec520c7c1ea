"""The seams between floors: what a lower floor calls without knowing who answers.

A lower floor never imports a higher one (docs/architecture.md); where it must reach up it takes one of
these, and the composition root (`edgefn/node.py`) passes the implementation:

- the runtime reports each invocation to an `InvocationObserver` (the Prometheus metrics implement it);
- the edge pipeline looks functions up through a `FunctionResolver` (the registry's live catalog) and
  reports what it decided to an `EdgeObserver` (the metrics again).
"""

from __future__ import annotations

from typing import Protocol

from .app import FunctionSpec
from .events import XCache
from .exceptions import InvocationError
from .report import InvocationReport

__all__ = ["EdgeObserver", "FunctionResolver", "InvocationObserver", "NoObserver"]


class InvocationObserver(Protocol):
    """Told about every invocation the runtime runs."""

    def invocation_started(self, function: str) -> None: ...

    def invocation_finished(self, fn: FunctionSpec, report: InvocationReport, error: InvocationError | None) -> None: ...


class EdgeObserver(Protocol):
    """Told what the edge pipeline decided for each request."""

    def invocation_rejected(self, function: str, kind: str) -> None: ...

    def cache_request(self, x_cache: XCache) -> None: ...

    def origin_fetched(self, behavior: str, seconds: float) -> None: ...


class FunctionResolver(Protocol):
    """A function reference (`name`, `name:7`, `name:alias`) -> what runs for one request."""

    def select(self, ref: str, request_id: str) -> FunctionSpec:
        """The version that runs (a weighted alias picks one per request); raises UnknownFunction."""
        ...

    def check(self, ref: str) -> str | None:
        """Why `ref` cannot be resolved now, or None if it can."""
        ...


class NoObserver:
    """Observes nothing (the CLI's one-off invocations, benchmarks)."""

    def invocation_started(self, function: str) -> None:
        pass

    def invocation_finished(self, fn: FunctionSpec, report: InvocationReport, error: InvocationError | None) -> None:
        pass

    def invocation_rejected(self, function: str, kind: str) -> None:
        pass

    def cache_request(self, x_cache: XCache) -> None:
        pass

    def origin_fetched(self, behavior: str, seconds: float) -> None:
        pass
