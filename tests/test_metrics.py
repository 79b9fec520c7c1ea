"""Prometheus metrics: the text exposition format of the registry, then known traffic through a real server
scraped from GET /metrics on its admin listener."""

from __future__ import annotations

import math
import re
import time

import httpx
import pytest

from edgefn.core.exceptions import MetricsError
from edgefn.observability.metrics import (
    CONTENT_TYPE,
    EdgeMetrics,
    MetricsRegistry,
    format_value,
)
from tests.servers import REPO, edge_server

GUESTS = REPO / "tests" / "guests" / "c"

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')

Key = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Key, float]:
    """Samples of an exposition, checking that each metric family is announced by HELP and TYPE first."""
    assert text.endswith("\n")
    announced: dict[str, str] = {}
    samples: dict[Key, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in announced, f"{name} announced twice"
            announced[name] = kind
            continue
        found = _SAMPLE.fullmatch(line)
        assert found, f"not a sample line: {line!r}"
        name, raw_labels, value = found.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in announced else name
        assert family in announced, f"{name} has no TYPE line before it"
        labels = [(k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")) for k, v in _LABEL.findall(raw_labels or "")]
        samples[(name, frozenset(labels))] = float(value)
    return samples


def value(samples: dict[Key, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# --- the format ------------------------------------------------------------------------------------------


def test_counter_and_gauge_exposition_with_escaping():
    registry = MetricsRegistry()
    hits = registry.counter("demo_hits_total", 'Hits, with a "quote", a back\\slash\nand a newline.', ("path",))
    hits.inc(path="/a")
    hits.inc(2, path='/b "quoted" \\ and\nnewline')
    level = registry.gauge("demo_level", "A level.")
    level.set(2.5)
    level.dec(0.5)
    assert registry.exposition() == (
        '# HELP demo_hits_total Hits, with a "quote", a back\\\\slash\\nand a newline.\n'
        "# TYPE demo_hits_total counter\n"
        'demo_hits_total{path="/a"} 1\n'
        'demo_hits_total{path="/b \\"quoted\\" \\\\ and\\nnewline"} 2\n'
        "# HELP demo_level A level.\n"
        "# TYPE demo_level gauge\n"
        "demo_level 2\n"
    )
    assert value(parse(registry.exposition()), "demo_hits_total", path='/b "quoted" \\ and\nnewline') == 2


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count():
    registry = MetricsRegistry()
    latency = registry.histogram("demo_seconds", "Latency.", ("route",), buckets=(0.1, 1, 0.5))
    for v in (0.05, 0.1, 0.3, 0.7, 2.0):
        latency.observe(v, route="x")
    lines = registry.exposition().splitlines()
    assert lines[1] == "# TYPE demo_seconds histogram"
    assert lines[2:] == [
        'demo_seconds_bucket{route="x",le="0.1"} 2',  # a value equal to a bound falls in that bucket
        'demo_seconds_bucket{route="x",le="0.5"} 3',
        'demo_seconds_bucket{route="x",le="1"} 4',
        'demo_seconds_bucket{route="x",le="+Inf"} 5',
        'demo_seconds_sum{route="x"} 3.15',
        'demo_seconds_count{route="x"} 5',
    ]


def test_values_and_callbacks():
    assert [format_value(v) for v in (3.0, 0.25, math.inf, -math.inf, 1e20)] == ["3", "0.25", "+Inf", "-Inf", "1e+20"]
    assert format_value(math.nan) == "NaN"
    registry = MetricsRegistry()
    depth = [4]
    registry.gauge_callback("demo_depth", "Read at scrape time.", lambda: depth[0])
    registry.counter_callback("demo_refused_total", "Per function.", lambda: {("a",): 2, ("b",): 1}, ("function",))
    samples = parse(registry.exposition())
    assert value(samples, "demo_depth") == 4 and value(samples, "demo_refused_total", function="b") == 1
    depth[0] = 7
    assert value(parse(registry.exposition()), "demo_depth") == 7
    registry.gauge_callback("demo_broken", "Its source fails.", lambda: 1 / 0)
    assert "# TYPE demo_broken gauge" in registry.exposition()  # one failing source does not break the scrape


def test_misuse_is_refused():
    registry = MetricsRegistry()
    c = registry.counter("demo_total", "x", ("function",))
    with pytest.raises(MetricsError, match="already registered"):
        registry.gauge("demo_total", "x")
    with pytest.raises(MetricsError, match="takes the labels function"):
        c.inc(kind="x")
    with pytest.raises(MetricsError, match="cannot go down"):
        c.inc(-1, function="f")
    with pytest.raises(MetricsError, match="metric name"):
        registry.counter("demo-total", "x")
    with pytest.raises(MetricsError, match="label named 'le'"):
        registry.histogram("demo_h", "x", ("le",), buckets=(1,))
    with pytest.raises(MetricsError, match="label name"):
        registry.counter("demo2_total", "x", ("__reserved",))


def test_edge_metrics_names():
    names = {line.split(" ")[2] for line in EdgeMetrics().exposition().splitlines() if line.startswith("# TYPE")}
    assert names == {
        "edgefn_invocations_total", "edgefn_errors_total", "edgefn_duration_seconds", "edgefn_fuel_used", "edgefn_cold_starts_total",
        "edgefn_warm_starts_total", "edgefn_concurrent_executions", "edgefn_cache_requests_total", "edgefn_origin_duration_seconds",
    }


# --- a real server ---------------------------------------------------------------------------------------

MANIFEST = f"""
[app]
name = "metrics"

[functions.ok]
source = "{GUESTS / 'echo.c'}"

[functions.crash]
source = "{GUESTS / 'trap.c'}"

[functions.warm]
source = "{GUESTS / 'echo.c'}"
reuse_instances = true

[functions.closed]
source = "{GUESTS / 'echo.c'}"
reserved_concurrency = 0

[[behaviors]]
path_pattern = "/crash/*"
function = "crash"

[[behaviors]]
path_pattern = "/cached/*"
function = "ok"
cache = {{}}

[[behaviors]]
path_pattern = "/warm/*"
function = "warm"

[[behaviors]]
path_pattern = "/closed/*"
function = "closed"

[default_behavior]
function = "ok"
"""


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """The samples scraped after known traffic: 5 ok, 2 traps, 1 cache miss + 2 hits, 3 on a warm pool, 1 throttle."""
    app = tmp_path_factory.mktemp("metrics-app")
    (app / "edgefn.toml").write_text(MANIFEST)
    with edge_server(app / "edgefn.toml", tls=False) as server, httpx.Client(base_url=server.base, timeout=30) as client:
        before = httpx.get(f"{server.admin}/metrics", headers=server.admin_headers, timeout=10)
        statuses = [client.get(path).status_code for path in ["/"] * 5 + ["/crash/a"] * 2 + ["/cached/x"] * 3 + ["/warm/y"] * 3 + ["/closed/z"]]
        assert statuses == [200] * 5 + [503] * 2 + [200] * 3 + [200] * 3 + [503]  # docs/errors.md: traps and throttles are 503
        response = httpx.get(f"{server.admin}/metrics", headers=server.admin_headers, timeout=10)
    assert before.status_code == 200
    assert response.status_code == 200 and response.headers["content-type"] == CONTENT_TYPE
    return parse(before.text), parse(response.text)


def test_nothing_counted_before_traffic(scraped):
    before, _ = scraped
    assert not [key for key in before if key[0] == "edgefn_invocations_total"]


def test_invocations_errors_and_throttles(scraped):
    _, s = scraped
    assert value(s, "edgefn_invocations_total", function="ok", version="$LATEST", outcome="ok") == 6  # 5 + the cache miss
    assert value(s, "edgefn_invocations_total", function="crash", version="$LATEST", outcome="trap") == 2
    assert value(s, "edgefn_invocations_total", function="warm", version="$LATEST", outcome="ok") == 3
    assert sum(v for (name, _), v in s.items() if name == "edgefn_invocations_total") == 11  # the throttled one never ran
    assert value(s, "edgefn_errors_total", function="crash", kind="trap") == 2
    assert sum(v for (name, _), v in s.items() if name == "edgefn_errors_total") == 2
    assert value(s, "edgefn_throttles_total", function="closed") == 1


def test_cold_and_warm_starts(scraped):
    _, s = scraped
    assert value(s, "edgefn_cold_starts_total", function="ok") == 6  # a fresh instance per request
    assert value(s, "edgefn_warm_starts_total", function="ok") is None
    assert value(s, "edgefn_cold_starts_total", function="warm") == 1
    assert value(s, "edgefn_warm_starts_total", function="warm") == 2


def test_duration_and_fuel_histograms(scraped):
    _, s = scraped
    for name in ("edgefn_duration_seconds", "edgefn_fuel_used"):
        assert value(s, f"{name}_count", function="ok") == 6
        assert value(s, f"{name}_bucket", function="ok", le="+Inf") == 6
        assert value(s, f"{name}_count", function="crash") == 2
    assert value(s, "edgefn_duration_seconds_sum", function="ok") > 0
    assert value(s, "edgefn_fuel_used_sum", function="ok") > 0
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in s.items() if name == "edgefn_duration_seconds_bucket" and ("function", "ok") in labels)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert value(s, "edgefn_concurrent_executions", function="ok") == 0  # nothing in flight after the traffic


def test_cache_and_origin(scraped):
    _, s = scraped
    assert value(s, "edgefn_cache_requests_total", result="miss") == 1
    assert value(s, "edgefn_cache_requests_total", result="hit") == 2
    assert value(s, "edgefn_origin_duration_seconds_count", behavior="/cached/*") == 1  # the hits never reached the origin
    assert value(s, "edgefn_origin_duration_seconds_count", behavior="*") == 5


def test_async_queue_gauges_are_read_at_scrape_time():
    metrics = EdgeMetrics()
    waiting: list[float] = []
    metrics.watch_async_queue(lambda: (len(waiting), min(waiting) if waiting else None))
    s = parse(metrics.exposition())
    assert value(s, "edgefn_async_queue_depth") == 0 and value(s, "edgefn_async_queue_oldest_age_seconds") == 0
    waiting += [time.time() - 30, time.time() - 5]
    s = parse(metrics.exposition())
    assert value(s, "edgefn_async_queue_depth") == 2
    assert 30 <= value(s, "edgefn_async_queue_oldest_age_seconds") < 300
