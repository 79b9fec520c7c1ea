"""Property tests: random events cross the real ABI (into a wasm guest and back) unchanged."""

from __future__ import annotations

import io
import math

import cbor2
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

    decoded = abi.decode_result(cbor2.dumps(doc), Event(event.config, EdgeRequest("GET", "/", client_ip=request.client_ip)))
    expected_body = Body(request.body.data) if request.body else None
    assert decoded == EdgeRequest(request.method, request.uri, request.querystring, request.headers, request.client_ip, expected_body)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(0, 99), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=cbor_values)
def test_the_native_cbor_encoder_writes_what_cbor2_writes(value):
    """runtime/_native.c encodes events (cbor2's encoder costs ~30 µs an event); guests and tools decode with
    any CBOR library, so its bytes are cbor2's for every type an event holds."""

    from edgefn.runtime import _native

    assert _native.cbor_encode(value) == cbor2.dumps(value)


def _same(a, b) -> bool:
    """Equal as CBOR values: same types all the way down (1 and 1.0 and True differ), NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _cbor2_or_error(raw: bytes) -> object:
    stream = io.BytesIO(raw)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception:
        return ERROR
    return value if stream.tell() == len(raw) else ERROR


ERROR = object()


@settings(max_examples=300, deadline=None)
@given(value=cbor_values, half=st.booleans())
def test_the_native_cbor_decoder_reads_what_cbor2_reads(value, half):
    """runtime/_native.c decodes results; what it decodes is what cbor2 decodes (floats in any width)."""
    from edgefn.runtime import _native

    raw = cbor2.dumps(value, canonical=half)  # canonical: floats in their shortest width (half, single)
    assert _same(_native.cbor_decode(raw), cbor2.loads(raw))


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=40) | cbor_values.map(cbor2.dumps).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n] + b[n + 1 :])))
def test_the_native_cbor_decoder_leaves_to_cbor2_what_it_does_not_decode(raw):
    """Any bytes (random, or a valid item with one byte cut out): the native decoder's value is cbor2's, or it
    answers NotImplemented and cbor2 decides (a malformed item, a tag, an indefinite length, trailing bytes)."""
    from edgefn.runtime import _native

    native = _native.cbor_decode(raw)
    if native is not NotImplemented:
        assert _same(native, _cbor2_or_error(raw))


@pytest.mark.parametrize(
    "raw",
    [b"\xc1\x00", b"\x9f\x01\xff", b"\x7f\x61a\xff", b"\xf7", b"\xa1\x81\x01\x02", b"\x3b\x80\x00\x00\x00\x00\x00\x00\x00", b"\x01\x02", b"\x62\xff\xfe", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff"],
)
def test_the_native_cbor_decoder_hands_cbor2_tags_indefinite_lengths_and_bad_items(raw):
    """A tag, indefinite lengths, undefined, an array key, a negative past 64 bits, trailing bytes, bad UTF-8,
    an array longer than its bytes: each is cbor2's to decode or refuse."""
    from edgefn.runtime import _native

    assert _native.cbor_decode(raw) is NotImplemented


@settings(max_examples=100, deadline=None)
@given(event=events)
def test_an_encoded_event_is_the_cbor_of_its_document(event):

    assert abi.encode_event(event) == cbor2.dumps(event_document(event))


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, object(), {"k": {1, 2}}, 1j])
def test_the_native_cbor_encoder_refuses_what_events_never_hold(value):
    from edgefn.runtime import _native

    with pytest.raises((TypeError, ValueError)):
        _native.cbor_encode(value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"A": []}, "result.headers['A']: header names must be lowercase HTTP tokens"),
        ({"a": "x"}, "result.headers['a'] must be a list of {key, value}, got str"),
        ({"a": [1]}, "result.headers['a'][0] must be a map {key, value}, got int"),
        ({"a": [{"key": "A", "value": "x", "z": 1}]}, "result.headers['a'][0] has unknown key 'z' (allowed: key, value)"),
        ({"a": [{"value": 3}]}, "result.headers['a'][0].value must be text, got int"),
        ({"a": [{"key": None, "value": "v"}]}, "result.headers['a'][0].key must be text, got NoneType"),
        ({"a": [{"key": "B", "value": "v"}]}, "result.headers['a'][0].key 'B' does not match the header name 'a'"),
        ({"a": [{"value": "v\r\n"}]}, "result.headers['a'][0].value contains CR, LF or NUL"),
        ({1: []}, "result.headers must be text keys, got int"),
    ],
)
def test_a_malformed_result_header_is_named_by_its_path(headers, message):

    from edgefn.core.events import ResultError

    event = Event(EventConfig("viewer-request", "r"), EdgeRequest("GET", "/"))
    with pytest.raises(ResultError) as info:
        abi.decode_result(cbor2.dumps({"status": 200, "headers": headers}), event)
    assert str(info.value) == message


@given(responses)
def test_an_unchanged_response_result_is_the_incoming_response_itself(response):
    """{"status": <the same>} (a response trigger's edgefn_continue) decodes to the event's own response, which
    the pipeline tells by identity; any other result is a new response built field by field."""
    event = Event(EventConfig("origin-response", "rid", "f"), EdgeRequest("GET", "/"), response)
    assert abi.decode_result(cbor2.dumps({"status": response.status}), event) is response
    as_text = abi.decode_result(cbor2.dumps({"status": str(response.status)}), event)
    assert as_text is not response and as_text == response
    other = 200 if response.status != 200 else 201
    changed = abi.decode_result(cbor2.dumps({"status": other}), event)
    assert changed is not response and changed.status == other and changed.headers == response.headers


def test_an_unchanged_request_result_is_the_incoming_request_itself():
    event = Event(EventConfig("viewer-request", "rid", "f"), EdgeRequest("GET", "/a", headers={"x": [("X", "1")]}))
    assert abi.decode_result(b"\xa0", event) is event.request  # {}
    assert abi.decode_result(cbor2.dumps({"uri": "/a"}), event) is not event.request


# --- marshal results (a Python component's handle-marshal): the host's strict reader -------------------------------

marshal_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(-99, 99), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=marshal_values, version=st.sampled_from([2, 3, 4]))
def test_the_marshal_reader_reads_what_marshal_dumps_writes(value, version):
    """Every value a result holds, in every format a guest's CPython may write, reads back as marshal.loads would."""
    import marshal

    from edgefn.runtime import _native

    raw = marshal.dumps(value, version)
    assert _same(_native.marshal_decode(raw), marshal.loads(raw))


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _marshal_bad() -> list:
    import marshal

    shared: dict = {"a": 1}
    cyclic: list = []
    cyclic.append(cyclic)
    return [
        (marshal.dumps(compile("1", "x", "eval")), "type code 0x63"),  # a code object
        (b")\x01i\x01\x00\x00\x00", "type code 0x29"),  # a tuple
        (b"<\x00\x00\x00\x00", "type code 0x3c"),  # a set
        (b"y" + bytes(16), "type code 0x79"),  # a complex
        (marshal.dumps({"status": 200}, 4)[:-3], "truncated"),
        (marshal.dumps({"status": 200}, 4) + b"N", "trailing bytes"),
        (marshal.dumps(_nested(80), 4), "nested too deep"),
        (marshal.dumps([shared, shared], 4), "a reference to a container"),
        (marshal.dumps(cyclic, 4), "a reference to a container"),
        (b"r\x05\x00\x00\x00", "a reference to a container or to nothing"),
        (b"[\xff\xff\xff\x7f", "a truncated list"),  # a length the document cannot hold: nothing is allocated for it
        (b"s\x10\x00\x00\x00abc", "truncated bytes"),
        (b"l\x06\x00\x00\x00" + b"\x01\x00" * 6, "an integer over 64 bits"),
        (b"l\x01\x00\x00\x00\x00\x80", "a malformed integer"),  # a 15-bit digit over 15 bits
        (b"u\x02\x00\x00\x00\xff\xfe", "text that is not utf-8"),
        (b"a\x01\x00\x00\x00\xe9", "a non-ascii byte"),
        (b"{[\x00\x00\x00\x00N0", "neither text nor an integer"),
    ]


@pytest.mark.parametrize(("raw", "problem"), _marshal_bad(), ids=[problem for _, problem in _marshal_bad()])
def test_the_marshal_reader_refuses_what_a_result_never_holds(raw, problem):
    """A hostile guest's result: what CPython's marshal.loads would build (code objects, tuples, sets, shared or
    cyclic containers) and what it would choke on are a ResultError naming what and where, never a crash."""
    event = Event(EventConfig("origin-request", "r"), EdgeRequest("GET", "/"))
    raw = raw if raw[:1] in (b"{", b"\xfb") else b"\xfb\xda\x01x" + raw + b"0"  # a result is a dict: put the value in one
    with pytest.raises(abi.ResultError, match="not a marshal document") as info:
        abi.decode_result(raw, event, "marshal")
    assert problem in str(info.value).lower() and "at byte" in str(info.value)


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=40) | marshal_values.map(lambda v: __import__("marshal").dumps(v, 4)).flatmap(
    lambda b: st.integers(0, len(b)).flatmap(lambda n: st.integers(0, 255).map(lambda x: b[:n] + bytes([x]) + b[n + 1 :]))))
def test_the_marshal_reader_reads_or_refuses_any_bytes(raw):
    """Random bytes, or a valid document with one byte changed: a value marshal.loads agrees with, or ValueError."""
    import marshal

    from edgefn.runtime import _native

    try:
        value = _native.marshal_decode(raw)
    except ValueError:
        return
    assert _same(value, marshal.loads(raw))


def test_a_marshal_export_result_that_is_cbor_is_read_as_cbor():
    """A component built before handle-marshal's results were marshal (BUILD_FORMAT 2) answered CBOR: still read."""
    import marshal

    event = Event(EventConfig("origin-request", "r"), EdgeRequest("GET", "/"))
    doc = {"status": 204, "headers": {"x-a": [{"key": "X-A", "value": "1"}]}}
    as_cbor = abi.decode_result(cbor2.dumps(doc), event, "marshal")
    as_marshal = abi.decode_result(marshal.dumps(doc, 4), event, "marshal")
    assert as_cbor == as_marshal and as_marshal.status == 204
