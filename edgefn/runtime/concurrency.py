"""Concurrency limits (Lambda's reserved concurrency and the account limit, per server process) and warm/cold counts.

A process admits at most `max_concurrency` invocations in flight. A function with a reservation R can always
have R in flight and never more (a cap and a guarantee); every other function shares the unreserved pool,
`max_concurrency - sum(reservations)`. An invocation over its limit is throttled at once, never queued.
"In flight" runs from admission to the end of the guest call, including the wait for a guest thread.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..core.exceptions import ConcurrencyConfigError, Throttled

#: the throttle reasons of Lambda's TooManyRequestsException
RESERVED_LIMIT_EXCEEDED = "ReservedFunctionConcurrentInvocationLimitExceeded"
CONCURRENT_LIMIT_EXCEEDED = "ConcurrentInvocationLimitExceeded"

#: share of max_concurrency that reservations must leave to the unreserved pool (Lambda: 100 of 1,000)
MIN_UNRESERVED_SHARE = 0.1

DEFAULT_MAX_CONCURRENCY = 1000


def min_unreserved(max_concurrency: int) -> int:
    """In-flight invocations that must stay unreserved: 10% of max_concurrency, at least 1."""
    return max(1, math.ceil(max_concurrency * MIN_UNRESERVED_SHARE))


def check_reservation_change(max_concurrency: int, current: Mapping[str, int | None], name: str, count: int | None) -> None:
    """Refuse (ConcurrencyConfigError) setting `name`'s reservation to `count` if a server would refuse to apply it."""
    others = {n: c for n, c in current.items() if c is not None and n != name}
    check_reservations(max_concurrency, others | ({name: count} if count is not None else {}))


def check_reservations(max_concurrency: int, reserved: Mapping[str, int]) -> None:
    """Raise ConcurrencyConfigError if the reservations leave fewer than min_unreserved() for everyone else."""
    if max_concurrency < 1:
        raise ConcurrencyConfigError(f"server.max_concurrency must be at least 1 (got {max_concurrency})")
    negative = sorted(name for name, n in reserved.items() if n < 0)
    if negative:
        raise ConcurrencyConfigError(f"reserved_concurrency of {', '.join(map(repr, negative))} is negative; use 0 or more")
    total = sum(reserved.values())
    floor = min_unreserved(max_concurrency)
    if max_concurrency - total < floor:
        named = ", ".join(f"{name}={n}" for name, n in sorted(reserved.items()) if n > 0)
        raise ConcurrencyConfigError(
            f"reserved concurrency of {total} ({named}) leaves {max_concurrency - total} of server.max_concurrency = "
            f"{max_concurrency} unreserved; at least {floor} (10%) must stay unreserved: lower reserved_concurrency "
            f"of these functions or raise server.max_concurrency"
        )


def reservations_of(specs: Iterable[Any]) -> dict[str, int]:
    """function name -> reservation, from FunctionSpecs (every version of a function carries the same one)."""
    return {spec.name: spec.reserved_concurrency for spec in specs if spec.reserved_concurrency is not None}


def provisioned_versions(provisioned: Mapping[tuple[str, str], int], aliases: Mapping[tuple[str, str], Any]) -> dict[tuple[str, str], int]:
    """(name, version) -> instances to keep initialised, from settings on versions and aliases.

    An alias's count goes to its version, split by weight when it routes to two (rounded, summing to the
    count); settings that land on the same version add up. An alias that no longer exists is skipped."""
    out: dict[tuple[str, str], int] = {}

    def add(name: str, version: str, n: int) -> None:
        if n > 0:
            out[(name, version)] = out.get((name, version), 0) + n

    for (name, qualifier), count in sorted(provisioned.items()):
        if qualifier.isdigit():
            add(name, qualifier, count)
            continue
        alias = aliases.get((name, qualifier))
        if alias is None:
            continue
        extra = round(count * alias.extra_weight) if alias.extra_version is not None else 0
        add(name, str(alias.version), count - extra)
        if alias.extra_version is not None:
            add(name, str(alias.extra_version), extra)
    return out


@dataclass
class Lease:
    """One admitted invocation; `release()` (idempotent) gives its slot back."""

    limiter: "ConcurrencyLimiter"
    function: str
    #: True if admitted against the function's reservation, False against the unreserved pool
    reserved: bool
    released: bool = False

    def release(self) -> None:
        self.limiter._release(self)


class ConcurrencyLimiter:
    """Admission control of one process; thread-safe (the event loop and guest threads share it)."""

    def __init__(self, max_concurrency: int = DEFAULT_MAX_CONCURRENCY, reserved: Mapping[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.max_concurrency = max_concurrency
        self.reserved: dict[str, int] = {}
        self._reserved_busy: dict[str, int] = {}
        self._unreserved_busy = 0
        self._throttled: dict[str, int] = {}
        self.configure(max_concurrency, reserved or {})

    def configure(self, max_concurrency: int, reserved: Mapping[str, int]) -> None:
        """Set the limits (at start and on every registry change); invocations in flight keep their slots."""
        check_reservations(max_concurrency, reserved)
        with self._lock:
            self.max_concurrency = max_concurrency
            self.reserved = dict(reserved)

    @property
    def unreserved(self) -> int:
        return self.max_concurrency - sum(self.reserved.values())

    def acquire(self, function: str, request_id: str) -> Lease:
        """Admit one invocation of `function` now, or raise Throttled with Lambda's reason."""
        with self._lock:
            reservation = self.reserved.get(function)
            if reservation is not None:
                limit = reservation
                if self._reserved_busy.get(function, 0) < limit:
                    self._reserved_busy[function] = self._reserved_busy.get(function, 0) + 1
                    return Lease(self, function, reserved=True)
                reason = RESERVED_LIMIT_EXCEEDED
            else:
                limit = self.max_concurrency - sum(self.reserved.values())
                if self._unreserved_busy < limit:
                    self._unreserved_busy += 1
                    return Lease(self, function, reserved=False)
                reason = CONCURRENT_LIMIT_EXCEEDED
            self._throttled[function] = self._throttled.get(function, 0) + 1
        raise Throttled(function, request_id, limit, reason)

    def _release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            if lease.reserved:
                self._reserved_busy[lease.function] -= 1
            else:
                self._unreserved_busy -= 1

    def in_flight(self, function: str | None = None) -> int:
        """Invocations in flight: of `function` against its reservation, or of the whole process."""
        with self._lock:
            if function is not None:
                return self._reserved_busy.get(function, 0)
            return self._unreserved_busy + sum(self._reserved_busy.values())

    def snapshot(self) -> dict[str, Any]:
        """The limits and current use, for GET /_edgefn/info."""
        with self._lock:
            return {
                "max_concurrency": self.max_concurrency,
                "unreserved": self.max_concurrency - sum(self.reserved.values()),
                "min_unreserved": min_unreserved(self.max_concurrency),
                "in_flight": self._unreserved_busy + sum(self._reserved_busy.values()),
                "unreserved_in_flight": self._unreserved_busy,
                "reserved": {name: {"reserved": n, "in_flight": self._reserved_busy.get(name, 0)} for name, n in sorted(self.reserved.items())},
                "throttled": dict(sorted(self._throttled.items())),
            }


@dataclass
class VersionCounts:
    """Invocations of one function version that ran, by instance temperature."""

    warm: int = 0
    cold: int = 0


@dataclass
class InvocationCounts:
    """Warm and cold invocations per function version ("name:version"), thread-safe."""

    _counts: dict[str, VersionCounts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, qualified_name: str, warm: bool) -> None:
        with self._lock:
            counts = self._counts.get(qualified_name)
            if counts is None:
                counts = self._counts[qualified_name] = VersionCounts()
            if warm:
                counts.warm += 1
            else:
                counts.cold += 1

    def get(self, qualified_name: str) -> VersionCounts:
        with self._lock:
            c = self._counts.get(qualified_name, VersionCounts())
            return VersionCounts(c.warm, c.cold)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: {"warm": c.warm, "cold": c.cold} for name, c in sorted(self._counts.items())}
