"""Raw-socket HTTP/1.1 against a real `edgefn serve`: request smuggling, stalled bodies, absurd chunk sizes.

RFC 9112 §6.1/§6.3: a request framed two ways, or with conflicting lengths, is refused and its connection
closed, so bytes after its body are never read as a second request. A body that stalls is answered 408 and
its connection closed, within the server's body deadlines.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.origin_app import origin_server, origin_stats
from tests.servers import edge_server, free_port
from tests.test_security import raw_request, status_of

IDLE_MS, TOTAL_MS = 600, 2000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hygiene")
    port = free_port()
    config = tmp / "edgefn.toml"
    config.write_text(
        f'[app]\nname = "hygiene"\n\n[server]\nbody_idle_timeout_ms = {IDLE_MS}\nbody_timeout_ms = {TOTAL_MS}\n\n'
        f'[default_behavior]\norigin = "http://127.0.0.1:{port}"\n'
    )
    with origin_server(port) as origin, edge_server(config, tls=False) as server:
        yield server, origin


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ],
)
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(env, headers):
    server, origin = env
    request = b"POST /upload HTTP/1.1\r\nHost: shop.example\r\n" + headers + b"\r\n" + b"0\r\n\r\n" + SMUGGLED
    raw = raw_request(server.port, request, timeout=20)
    assert status_of(raw) == 400 and b"Content-Length and Transfer-Encoding" in raw
    assert raw.count(b"HTTP/1.1 ") == 1  # nothing after the refusal was answered
    assert "/smuggled" not in origin_stats(origin) and "/upload" not in origin_stats(origin)


def test_conflicting_content_lengths_are_refused(env):
    server, origin = env
    raw = raw_request(server.port, b"POST /cl HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + SMUGGLED, timeout=20)
    assert status_of(raw) in (400,)
    assert raw.count(b"HTTP/1.1 ") == 1 and "/smuggled" not in origin_stats(origin)


def test_a_stalled_body_is_answered_408_and_closed_within_the_deadline(env):
    server, origin = env
    socks = []
    start = time.monotonic()
    for _ in range(20):  # many at once: each gets its own deadline, none holds the others
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(b"POST /stall HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100\r\n\r\nab")
        socks.append(s)
    try:
        for s in socks:
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break  # the server closed the connection
                data += chunk
            assert status_of(data) == 408 and b"no body bytes" in data
    finally:
        for s in socks:
            s.close()
    assert time.monotonic() - start < 20  # idle deadline 0.6 s, not the 30 s a stalled upload used to hold
    assert "/stall" not in origin_stats(origin)


def test_a_body_that_trickles_past_the_total_deadline_is_408(env):
    server, _ = env
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /trickle HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 1000\r\n\r\n")
        deadline = time.monotonic() + 15
        data = b""
        while time.monotonic() < deadline:
            try:
                s.sendall(b"x")  # one byte per 0.2 s: never idle, never done
            except OSError:
                break
            s.settimeout(0.2)
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            except socket.timeout:
                continue
        assert status_of(data) == 408 and b"not complete after" in data


@pytest.mark.parametrize("size", [b"1000000000000000000", b"FFFFFFFFFFFFFFFFF"])
def test_an_absurd_chunk_size_is_400(env, size):
    server, origin = env
    raw = raw_request(server.port, b"POST /chunky HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nab", timeout=20)
    assert status_of(raw) == 400
    assert "/chunky" not in origin_stats(origin)


def test_the_server_still_serves_after_all_of_that(env):
    server, _ = env
    raw = raw_request(server.port, b"GET /fine HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n", timeout=20)
    assert status_of(raw) == 200
