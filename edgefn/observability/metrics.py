"""Prometheus metrics of one server process: a small registry and the text exposition format 0.0.4.

Every server process keeps its own registry; with several workers each exposes its own numbers (a scrape
reaches one of them), as Prometheus client libraries do without a multiprocess mode. EdgeMetrics names
the series edgefn records (docs/observability.md).
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence, TypeVar

from ..core.exceptions import MetricsError

if TYPE_CHECKING:
    from ..core.app import FunctionSpec
    from ..core.events import XCache
    from ..core.exceptions import InvocationError
    from ..core.report import InvocationReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

log = logging.getLogger("edgefn.metrics")

Labels = tuple[str, ...]
#: what a callback series returns at scrape time: one value, or a value per tuple of label values
CallbackValues = float | Mapping[Labels, float]


# --- the text format ----------------------------------------------------------------------------------


def format_value(value: float) -> str:
    """A sample value or `le` bound as Prometheus writes it: integers without a fraction, +Inf/-Inf/NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, names: Sequence[str], values: Sequence[str], value: float) -> str:
    if not names:
        return f"{name} {format_value(value)}"
    labels = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=False))
    return f"{name}{{{labels}}} {format_value(value)}"


# --- metric families ------------------------------------------------------------------------------------


class _Family:
    """A named metric with fixed label names; one child (series) per tuple of label values."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise MetricsError(f"metric name {name!r} must match [a-zA-Z_:][a-zA-Z0-9_:]*")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise MetricsError(f"label name {label!r} of {name} must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise MetricsError(f"{self.name} takes the labels {', '.join(self.labelnames) or '(none)'}, got {', '.join(sorted(labels)) or '(none)'}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def labels(self, **labels: str) -> Labels:
        """The series of these label values, checked once: a hot path keeps it and passes it to `*_at`."""
        return self._key(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class _Scalar(_Family):
    """A family with one number per series (counters and gauges)."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {} if labelnames else {(): 0.0}

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [_sample(self.name, self.labelnames, key, v) for key, v in items]


class Counter(_Scalar):
    """A count that only goes up (resets when the process restarts)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.inc_at(self._key(labels), amount)

    def inc_at(self, key: Labels, amount: float = 1.0) -> None:
        """`inc` on a series from `labels()`."""
        if amount < 0:
            raise MetricsError(f"{self.name} is a counter: it cannot go down (inc by {amount})")
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.inc_at(self._key(labels), amount)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc_at(self._key(labels), -amount)

    def inc_at(self, key: Labels, amount: float = 1.0) -> None:
        """`inc` (a negative `amount`: `dec`) on a series from `labels()`."""
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


@dataclass
class _Buckets:
    counts: list[int]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0


class Histogram(_Family):
    """Observations counted into cumulative buckets (`le`), with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()) -> None:
        if "le" in labelnames:
            raise MetricsError(f"{name}: a histogram may not have a label named 'le'")
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise MetricsError(f"{name}: give at least one finite bucket bound, without repeats")
        self.bounds = bounds
        self._series: dict[Labels, _Buckets] = {} if labelnames else {(): self._empty()}

    def _empty(self) -> _Buckets:
        return _Buckets([0] * (len(self.bounds) + 1))

    def observe(self, value: float, **labels: str) -> None:
        self.observe_at(self._key(labels), value)

    def observe_at(self, key: Labels, value: float) -> None:
        """`observe` on a series from `labels()`."""
        index = bisect.bisect_left(self.bounds, value)  # the first bucket whose bound is >= value (+Inf past the last)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._empty()
            series.counts[index] += 1
            series.total += value
            series.count += 1

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((key, _Buckets(list(s.counts), s.total, s.count)) for key, s in self._series.items())
        out = self.header()
        names = (*self.labelnames, "le")
        for key, series in items:
            cumulative = 0
            for bound, n in zip([*self.bounds, math.inf], series.counts, strict=False):
                cumulative += n
                out.append(_sample(f"{self.name}_bucket", names, (*key, format_value(bound)), cumulative))
            out.append(_sample(f"{self.name}_sum", self.labelnames, key, series.total))
            out.append(_sample(f"{self.name}_count", self.labelnames, key, series.count))
        return out


class CallbackMetric(_Family):
    """A counter or gauge whose values are read from `read()` at scrape time (state another part owns)."""

    def __init__(self, kind: str, name: str, help: str, read: Callable[[], CallbackValues], labelnames: Sequence[str] = ()) -> None:
        if kind not in ("counter", "gauge"):
            raise MetricsError(f"{name}: a callback metric is a counter or a gauge, not {kind!r}")
        super().__init__(name, help, labelnames)
        self.kind = kind
        self.read = read

    def lines(self) -> list[str]:
        try:
            values = self.read()
        except Exception as exc:  # a failing source must not break the whole scrape
            log.warning("metric %s: reading its value failed: %s", self.name, exc)
            return self.header()
        if not isinstance(values, Mapping):
            if self.labelnames:
                raise MetricsError(f"{self.name} has labels: its callback must return {{label values: value}}")
            return self.header() + [_sample(self.name, (), (), float(values))]
        out = self.header()
        for key, v in sorted(values.items()):
            if len(key) != len(self.labelnames):
                raise MetricsError(f"{self.name}: callback returned label values {key!r} for labels {self.labelnames!r}")
            out.append(_sample(self.name, self.labelnames, tuple(str(k) for k in key), float(v)))
        return out


_F = TypeVar("_F", bound="_Family")


class MetricsRegistry:
    """The metric families of one process, in registration order; `exposition()` renders them all."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def _add(self, family: _F) -> _F:
        with self._lock:
            if family.name in self._families:
                raise MetricsError(f"a metric named {family.name} is already registered")
            self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()) -> Histogram:
        return self._add(Histogram(name, help, labelnames, buckets))

    def gauge_callback(self, name: str, help: str, read: Callable[[], CallbackValues], labelnames: Sequence[str] = ()) -> CallbackMetric:
        """A gauge computed at scrape time: `read()` returns a number, or {label values tuple: number}."""
        return self._add(CallbackMetric("gauge", name, help, read, labelnames))

    def counter_callback(self, name: str, help: str, read: Callable[[], CallbackValues], labelnames: Sequence[str] = ()) -> CallbackMetric:
        """A counter another component keeps (it must only grow), read at scrape time."""
        return self._add(CallbackMetric("counter", name, help, read, labelnames))

    def families(self) -> Iterator[_Family]:
        with self._lock:
            return iter(list(self._families.values()))

    def exposition(self) -> str:
        """Every family in the text format 0.0.4 (serve it with CONTENT_TYPE)."""
        lines: list[str] = []
        for family in self.families():
            lines.extend(family.lines())
        return "\n".join(lines) + "\n"


# --- edgefn's series ------------------------------------------------------------------------------------

#: guest durations, seconds: from sub-millisecond filters to the 900 s timeout limit
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: wasm instructions: a tiny header filter uses thousands, the default budget is 2e9
FUEL_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12)
ORIGIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180)

#: X-Cache outcomes as label values
_CACHE_RESULTS = {"Hit": "hit", "Miss": "miss", "RefreshHit": "refresh_hit", "LambdaGeneratedResponse": "lambda_generated", "Error": "error"}


@dataclass
class _FunctionSeries:
    """One function's label keys: (function,) for its per-function series, and per (version, outcome)."""

    function: Labels
    outcomes: dict[tuple[str, str], Labels] = field(default_factory=dict)


@dataclass
class EdgeMetrics:
    """The metrics an edgefn server process exposes (GET /metrics on the admin listener)."""

    registry: MetricsRegistry = field(default_factory=MetricsRegistry)
    _functions: dict[str, "_FunctionSeries"] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        fn = ("function",)
        self.invocations = r.counter("edgefn_invocations_total", "Invocations that ran (throttled ones are not counted), by outcome: ok or the error kind.", ("function", "version", "outcome"))
        self.errors = r.counter("edgefn_errors_total", "Invocations that failed, by error kind (trap, timeout, cpu_budget_exhausted, rule_violation, ...).", ("function", "kind"))
        self.duration = r.histogram("edgefn_duration_seconds", "Duration of invocations (the REPORT line's Duration), in seconds.", fn, DURATION_BUCKETS)
        self.fuel = r.histogram("edgefn_fuel_used", "Fuel (wasm instructions) used per invocation.", fn, FUEL_BUCKETS)
        self.cold_starts = r.counter("edgefn_cold_starts_total", "Invocations on a new instance (the REPORT line has an Init Duration).", fn)
        self.warm_starts = r.counter("edgefn_warm_starts_total", "Invocations on a warm, reused instance.", fn)
        self.concurrent = r.gauge("edgefn_concurrent_executions", "Invocations running in a guest thread of this process now.", fn)
        self.cache_requests = r.counter("edgefn_cache_requests_total", "Requests on cached behaviors by what the cache did: hit, miss, refresh_hit.", ("result",))
        self.origin_duration = r.histogram("edgefn_origin_duration_seconds", "Time until the origin answered with its response headers (or failed), in seconds.", ("behavior",), ORIGIN_BUCKETS)

    # --- what the runtime and the pipeline report -------------------------------------------------------

    def invocation_started(self, function: str) -> None:
        self.concurrent.inc_at(self._series_of(function).function)

    def invocation_finished(self, fn: "FunctionSpec", report: "InvocationReport", error: "InvocationError | None") -> None:
        """One invocation that ran (successfully or not): its outcome, duration, fuel and temperature."""
        series = self._series_of(fn.name)
        key = series.function
        self.concurrent.inc_at(key, -1)
        outcome = series.outcomes.get((fn.version, report.outcome))
        if outcome is None:
            outcome = series.outcomes[(fn.version, report.outcome)] = self.invocations.labels(function=fn.name, version=fn.version, outcome=report.outcome)
        self.invocations.inc_at(outcome)
        if error is not None:
            self.errors.inc(function=fn.name, kind=error.kind)
        self.duration.observe_at(key, report.duration_ms / 1000)
        if report.fuel_exact:  # a timed-out run's fuel is only a lower bound (InvocationReport.fuel_exact)
            self.fuel.observe_at(key, report.fuel_used)
        (self.warm_starts if report.warm else self.cold_starts).inc_at(key)

    def _series_of(self, function: str) -> "_FunctionSeries":
        """The label keys of one function's series, checked once (every invocation records ~6 samples)."""
        series = self._functions.get(function)
        if series is None:
            series = self._functions[function] = _FunctionSeries(self.concurrent.labels(function=function))
        return series

    def invocation_rejected(self, function: str, kind: str) -> None:
        """A result the pipeline refused after the invocation itself ended well (a rule violation)."""
        self.errors.inc(function=function, kind=kind)

    def cache_request(self, x_cache: "XCache | str") -> None:
        self.cache_requests.inc(result=_CACHE_RESULTS.get(str(x_cache), str(x_cache).lower()))

    def origin_fetched(self, behavior: str, seconds: float) -> None:
        self.origin_duration.observe(seconds, behavior=behavior)

    # --- state other parts own, read at scrape time ---------------------------------------------------

    def watch_throttles(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """edgefn_throttles_total from the concurrency limiter's own count: function -> throttled invocations."""
        self.registry.counter_callback(
            "edgefn_throttles_total", "Invocations refused at once for being over a concurrency limit.",
            lambda: {(name,): n for name, n in counts().items()}, ("function",),
        )

    def watch_async_queue(self, stats: Callable[[], tuple[int, float | None]]) -> None:
        """The async-invocation queue, read at scrape time: `stats()` gives (events waiting for delivery,
        queued or retrying; enqueued_at epoch seconds of the oldest of them, None when there are none)."""
        self.registry.gauge_callback("edgefn_async_queue_depth", "Asynchronous invocations waiting for delivery (queued or retrying), in the whole queue.", lambda: stats()[0])

        def oldest_age() -> float:
            oldest = stats()[1]
            return 0.0 if oldest is None else max(0.0, time.time() - oldest)

        self.registry.gauge_callback("edgefn_async_queue_oldest_age_seconds", "How long the oldest waiting asynchronous invocation has waited, in seconds (0 when none).", oldest_age)

    def exposition(self) -> str:
        return self.registry.exposition()
