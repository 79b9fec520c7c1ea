"""Property tests: random events cross the real ABI (into a wasm guest and back) unchanged."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefn.core.app import Limits
from edgefn.core.events import (
    EVENT_TYPES,
    Body,
    EdgeRequest,
    EdgeResponse,
    Event,
    EventConfig,
    event_document,
    event_from_document,
    title_case,
    to_json_document,
)
from edgefn.runtime import abi
from tests.conftest import RETURN_INPUT, wat_guest

header_names = st.from_regex(r"[a-z][a-z0-9\-]{0,20}", fullmatch=True)
header_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40)
headers = st.dictionaries(
    header_names,
    st.lists(st.tuples(st.just(""), header_values), min_size=1, max_size=3),
    max_size=8,
).map(lambda h: {name: [(title_case(name), v) for _, v in entries] for name, entries in h.items()})
bodies = st.one_of(st.none(), st.builds(Body, st.binary(max_size=4096), st.booleans()))
requests = st.builds(
    EdgeRequest,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    uri=st.from_regex(r"/[A-Za-z0-9/_.~%-]{0,60}", fullmatch=True),
    querystring=st.from_regex(r"([a-z0-9]{1,8}=[A-Za-z0-9%]{0,8}(&[a-z0-9]{1,8}=[A-Za-z0-9%]{0,8}){0,3})?", fullmatch=True),
    headers=headers,
    client_ip=st.ip_addresses().map(str),
    body=bodies,
)
responses = st.builds(EdgeResponse, status=st.integers(200, 599), status_description=st.text(max_size=20), headers=headers, body=bodies)
events = st.builds(
    Event,
    config=st.builds(EventConfig, st.sampled_from(EVENT_TYPES), st.uuids().map(str), st.just("echo")),
    request=requests,
    response=st.one_of(st.none(), responses),
)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """A guest that returns its input buffer untouched: the bytes make the whole trip host → guest → host."""
    from edgefn.runtime.invoker import Runtime

    with Runtime(tmp_path_factory.mktemp("store")) as rt:
        loaded, _ = rt.store.load(rt.store.add(wat_guest(RETURN_INPUT)), "echo")
        yield rt, loaded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events)
def test_random_events_roundtrip_through_a_guest(echo, event):
    rt, loaded = echo
    run = rt.sandbox.run(
        loaded, function="echo", request_id=event.config.request_id, event=abi.encode_event(event),
        limits=Limits(), env={}, emit=lambda level, msg: None,
    )
    assert run.error is None
    assert abi.decode_event(run.result) == event


@settings(max_examples=100, deadline=None)
@given(event=events)
def test_json_form_roundtrips(event):
    assert event_from_document(to_json_document(event)) == event


@settings(max_examples=100, deadline=None)
@given(request=requests)
def test_a_returned_request_document_decodes_to_the_same_request(request):
    event = Event(EventConfig("viewer-request", "r"), EdgeRequest("GET", "/"))
    doc = event_document(Event(event.config, request))["request"]
    doc["body"] = {"action": "replace", "data": request.body.data} if request.body else {"action": "read-only"}
    import cbor2

    decoded = abi.decode_result(cbor2.dumps(doc), Event(event.config, EdgeRequest("GET", "/", client_ip=request.client_ip)))
    expected_body = Body(request.body.data) if request.body else None
    assert decoded == EdgeRequest(request.method, request.uri, request.querystring, request.headers, request.client_ip, expected_body)
