"""Unit-test a Python edge function on a plain CPython (pytest, an IDE), without building it.

`pip install edgefn` puts `edgefn_guest` on the host too. Handlers are plain functions: call them with a
`Request` / `Response` you build, and check what they return. The host calls (`log`, `env`, `fetch`, `kv`)
go to a `LocalHost` you configure (`kv={"visits": {}}` grants an in-memory namespace the test can inspect):

    from edgefn_guest import Request
    from edgefn_guest.testing import local_host

    import auth  # the function module under test

    def test_a_missing_token_is_refused():
        with local_host(env={"TOKEN": "t0k"}) as host:
            response = auth.viewer_request(Request(uri="/admin"))
        assert response.status == 401
        assert host.logs == [("warn", "no token for /admin")]

Inside a component the same calls reach the edgefn runtime; only the backend differs.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

from . import _cbor, _host
from ._model import Headers, Request, Response

__all__ = ["LocalHost", "local_host"]

#: a test's stand-in for outbound HTTP: the request, in; the response to give the function, out
FetchHandler = Callable[[Request], Response]


class LocalHost:
    """The host of a function under test: `env` as its manifest env, `logs` gathers (level, line), and
    `fetch` (a FetchHandler) answers its outbound requests (without one, fetch raises FetchError)."""

    def __init__(
        self, env: Mapping[str, str] | None = None, fetch: FetchHandler | None = None, kv: dict[str, dict[bytes, bytes]] | None = None,
    ) -> None:
        self.env = dict(env or {})
        #: the granted namespaces, each a dict the function's puts and deletes change (TTLs are not kept)
        self.kv_namespaces = kv if kv is not None else {}
        self.logs: list[tuple[str, str]] = []
        self.fetch_handler = fetch
        #: every outbound request the function made, in order
        self.fetched: list[Request] = []

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def env_get(self, name: str) -> str | None:
        return self.env.get(name)

    def fetch(self, request: bytes) -> bytes:
        doc = _cbor.loads(request)
        outbound = Request(method=doc["method"], uri=doc["url"], headers=Headers._from_document(doc.get("headers") or {}), body=doc.get("body"))
        self.fetched.append(outbound)
        if self.fetch_handler is None:
            return _cbor.dumps({"error": f"no fetch handler in this test for {doc['method']} {doc['url']} (local_host(fetch=...))"})
        answer = self.fetch_handler(outbound)
        result = answer._result()
        return _cbor.dumps({"status": result["status"], "headers": result.get("headers", {}), "body": answer.body or b""})


    def kv(self, request: bytes) -> bytes:
        doc = _cbor.loads(request)
        space = self.kv_namespaces.get(doc.get("namespace"))
        if space is None:
            return _cbor.dumps({"error": f"kv refused: namespace {doc.get('namespace')!r} is not granted in this test (local_host(kv={{...}}))"})
        op, key = doc.get("op"), doc.get("key", b"")
        if op == "get":
            return _cbor.dumps({"found": True, "value": space[key]} if key in space else {"found": False})
        if op == "put":
            space[key] = doc["value"]
            return _cbor.dumps({"ok": True})
        if op == "delete":
            return _cbor.dumps({"deleted": space.pop(key, None) is not None})
        keys = sorted(k for k in space if k.startswith(doc.get("prefix", b"")) and k > bytes.fromhex(doc.get("cursor") or ""))
        limit = doc.get("limit", 1000)
        more = len(keys) > limit
        return _cbor.dumps({"keys": keys[:limit]} | ({"cursor": keys[limit - 1].hex()} if more else {}))


@contextlib.contextmanager
def local_host(
    env: Mapping[str, str] | None = None, fetch: FetchHandler | None = None, kv: dict[str, dict[bytes, bytes]] | None = None,
) -> Iterator[LocalHost]:
    """Run the block's host calls on a new LocalHost (the previous backend comes back afterwards)."""
    host = LocalHost(env, fetch, kv)
    previous = _host.current()
    _host.install(host)
    try:
        yield host
    finally:
        _host.install(previous)
