"""W3C trace context through a real `edgefn serve`, and its spans exported over OTLP/HTTP to a receiver started here
that decodes them with the OpenTelemetry protobuf types (never mocked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from edgefn.core.tracing import TraceContext
from tests.conftest import GUESTS_C as GUESTS
from tests.conftest import REPO, wait_for
from tests.origin_app import origin_server
from tests.servers import OtlpReceiver, edge_server, free_port

TOKEN = "tracing-token"
INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"
SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP's SpanKind numbers


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with a viewer-request hook in front of the test origin, a function that fetches the origin, and an
    async-invocable function, exporting to an OTLP receiver."""
    receiver = OtlpReceiver()
    root = tmp_path_factory.mktemp("tracing")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    config = root / "edgefn.toml"
    config.write_text(f"""
[app]
name = "traced"

[tracing]
otlp_endpoint = "{receiver.url}"
service_name = "edge-traced"

[functions.redirect]
source = "{REPO / 'examples' / 'redirect' / 'src' / 'redirect.c'}"

[functions.fetcher]
source = "{GUESTS / 'fetcher.c'}"
allowed_hosts = ["127.0.0.1:{port}"]

[[behaviors]]
path_pattern = "/origin/*"
origin = "{origin}"
viewer_request = {{ function = "redirect" }}

[[behaviors]]
path_pattern = "/cached/*"
origin = "{origin}"
cache = {{ default_ttl = 300 }}

[default_behavior]
function = "fetcher"
""")
    with origin_server(port), edge_server(config, tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as server:
        yield {"server": server, "receiver": receiver, "origin": origin, "config": config}
    receiver.close()


def _spans(receiver: OtlpReceiver, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The spans of `trace_id` by name, once every one of `names` has arrived."""
    return wait_for(lambda: (got := {s["name"]: s for s in receiver.of_trace(trace_id)}) and names <= set(got) and got, 60, f"spans {names}")


def test_a_viewer_traceparent_is_continued_through_the_hook_and_to_the_origin(traced):
    server, receiver = traced["server"], traced["receiver"]
    r = httpx.get(f"{server.base}/origin/echo", headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"}, timeout=30)
    assert r.status_code == 200
    sent = TraceContext.parse(r.json()["headers"]["traceparent"])  # what the origin received
    assert sent is not None and sent.trace_hex == INCOMING_TRACE and sent.span_hex != INCOMING_SPAN
    spans = _spans(receiver, INCOMING_TRACE, {"GET /origin/*", "viewer-request redirect", "origin GET"})
    request, hook, origin = spans["GET /origin/*"], spans["viewer-request redirect"], spans["origin GET"]
    assert request["parent_id"] == INCOMING_SPAN and request["kind"] == SERVER and request["service"] == "edge-traced"
    assert request["attributes"]["http.response.status_code"] == 200 and request["attributes"]["edgefn.request_id"] == r.headers["x-edgefn-request-id"]
    assert hook["parent_id"] == request["span_id"] and hook["attributes"]["faas.name"] == "redirect"
    assert origin["parent_id"] == request["span_id"] and origin["kind"] == CLIENT and origin["span_id"] == sent.span_hex
    assert origin["attributes"]["url.full"] == f"{traced['origin']}/origin/echo"


def test_a_new_trace_covers_the_guest_fetch_and_its_id_is_in_report_and_access_log(traced):
    server, receiver = traced["server"], traced["receiver"]
    r = httpx.get(f"{server.base}/", params={"url": f"{traced['origin']}/echo"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-fetch-status"] == "200"
    sent = TraceContext.parse(r.json()["headers"]["traceparent"])  # what the guest's fetch carried
    assert sent is not None
    trace = sent.trace_hex
    spans = _spans(receiver, trace, {"GET *", "origin-request fetcher", "fetch GET"})
    request, invocation, fetch = spans["GET *"], spans["origin-request fetcher"], spans["fetch GET"]
    assert request["parent_id"] == ""  # a root: the viewer sent no traceparent
    assert invocation["parent_id"] == request["span_id"] and fetch["parent_id"] == invocation["span_id"]
    assert fetch["span_id"] == sent.span_hex and fetch["kind"] == CLIENT and fetch["attributes"]["http.response.status_code"] == 200
    rid = r.headers["x-edgefn-request-id"]
    log = server.log.read_text()
    report = next(line for line in log.splitlines() if line.startswith(f"REPORT RequestId: {rid}") or f"REPORT RequestId: {rid}\t" in line)
    assert f"Trace Id: {trace}" in report
    access = [json.loads(line.split(" edgefn.access ", 1)[1]) for line in log.splitlines() if " edgefn.access " in line]
    assert any(a["request_id"] == rid and a["trace_id"] == trace for a in access)


def test_an_async_invocation_is_a_consumer_span_in_the_submitters_trace(traced):
    server, receiver = traced["server"], traced["receiver"]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    event = {"request": {"method": "GET", "uri": "/", "querystring": f"url={traced['origin']}/echo",
                         "headers": {"traceparent": [{"key": "traceparent", "value": f"00-{trace}-00f067aa0ba902b7-01"}]}}}
    r = httpx.post(f"{server.admin}/2015-03-31/functions/fetcher/invocations", json=event,
                   headers={"X-Amz-Invocation-Type": "Event", "Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 202
    spans = _spans(receiver, trace, {"async fetcher", "viewer-request fetcher", "fetch GET"})
    delivery = spans["async fetcher"]
    assert delivery["kind"] == CONSUMER and delivery["parent_id"] == "00f067aa0ba902b7" and delivery["attributes"]["edgefn.attempt"] == 1
    assert spans["viewer-request fetcher"]["parent_id"] == delivery["span_id"]


def test_malformed_traceparents_start_a_new_trace(traced):
    server, receiver = traced["server"], traced["receiver"]
    for bad in ("00-00000000000000000000000000000000-b7ad6b7169203331-01", "zz-nothex", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        r = httpx.get(f"{server.base}/origin/echo", headers={"traceparent": bad}, timeout=30)
        sent = TraceContext.parse(r.json()["headers"]["traceparent"])
        assert sent is not None and sent.trace_hex not in (INCOMING_TRACE, "0" * 32)
        assert _spans(receiver, sent.trace_hex, {"GET /origin/*"})["GET /origin/*"]["parent_id"] == ""


def test_without_an_endpoint_contexts_still_propagate(tmp_path: Path):
    port = free_port()
    config = tmp_path / "edgefn.toml"
    config.write_text(f"""
[app]
name = "untraced"

[functions.fetcher]
source = "{GUESTS / 'fetcher.c'}"
allowed_hosts = ["127.0.0.1:{port}"]

[default_behavior]
function = "fetcher"
""")
    with origin_server(port) as origin, edge_server(config, tls=False) as server:
        r = httpx.get(f"{server.base}/", params={"url": f"{origin}/echo"}, headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"}, timeout=30)
        sent = TraceContext.parse(r.json()["headers"]["traceparent"])
        assert sent is not None and sent.trace_hex == INCOMING_TRACE and sent.span_hex != INCOMING_SPAN
        assert f"Trace Id: {INCOMING_TRACE}" in server.log.read_text()


def test_the_cache_lookup_is_a_span_saying_hit_or_miss(traced):
    server, receiver = traced["server"], traced["receiver"]
    miss, hit = TraceContext.new(), TraceContext.new()
    for trace in (miss, hit):
        r = httpx.get(f"{server.base}/cached/page", params={"cc": "max-age=300"}, headers={"traceparent": trace.traceparent()}, timeout=30)
        assert r.status_code == 200
    first = _spans(receiver, miss.trace_hex, {"GET /cached/*", "cache", "origin GET"})  # a miss fetches from the origin
    second = _spans(receiver, hit.trace_hex, {"GET /cached/*", "cache"})
    assert first["cache"]["parent_id"] == first["GET /cached/*"]["span_id"] and first["cache"]["attributes"]["edgefn.cache"] == "Miss"
    assert second["cache"]["attributes"]["edgefn.cache"] == "Hit" and second["GET /cached/*"]["attributes"]["edgefn.cache"] == "Hit"
