"""kv: the key-value store, to the namespaces a function's manifest grants it (`kv = [...]`; docs/kv.md).

One call, one CBOR request map, one CBOR answer map (guest-sdk/ABI.md §3), on both ABI faces. Each call counts
against the invocation's `kv_ops`, and the bytes of its keys and values against `kv_bytes`; the REPORT line
shows both. A refusal (a namespace not granted, a budget spent, a key or value over its limit) is an
`{"error"}` answer the guest sees, and a warning in the function's log; the store itself is never reached.
"""

from __future__ import annotations

from typing import Any

import cbor2
from wasmtime import component as wc

from ...core.records import KV_MAX_LIST_LIMIT, kv_problem
from .. import _native
from ..context import KvGrant, current_context
from .capability import HostCapability, add_bytes_function
from .guest_memory import I32, request_and_result

__all__ = ["CAPABILITY", "guest_kv", "perform_kv"]

_OPS = ("get", "put", "delete", "list")


class _Refused(Exception):
    pass


def _bytes_field(doc: dict[str, Any], key: str, required: bool = True) -> bytes:
    value = doc.get(key)
    if value is None and not required:
        return b""
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise _Refused(f"{key} must be bytes or text")
    return value


def perform_kv(grant: KvGrant | None, request: bytes) -> dict[str, Any]:
    """Run one guest KV call under `grant`; the answer document ({"error": ...} when refused or failed)."""
    try:
        doc = cbor2.loads(request)
        if not isinstance(doc, dict):
            raise _Refused("the request must be a map")
        op, namespace = doc.get("op"), doc.get("namespace")
        if op not in _OPS:
            raise _Refused(f"op must be one of {', '.join(_OPS)} (got {op!r})")
        if not isinstance(namespace, str):
            raise _Refused("namespace must be text")
        if grant is None or namespace not in grant.namespaces:
            granted = ", ".join(repr(n) for n in grant.namespaces) if grant is not None and grant.namespaces else "none"
            raise _Refused(f"namespace {namespace!r} is not granted to this function (kv = [{granted}] in its manifest)")
        if grant.ops >= grant.max_ops:
            raise _Refused(f"over kv_ops: {grant.max_ops} key-value operations in one invocation")
        grant.ops += 1
        if op == "list":
            prefix = _bytes_field(doc, "prefix", required=False)
            cursor, limit = doc.get("cursor"), doc.get("limit", KV_MAX_LIST_LIMIT)
            if cursor is not None and not isinstance(cursor, str):
                raise _Refused("cursor must be text (what the previous list returned)")
            if not isinstance(limit, int) or not 1 <= limit <= KV_MAX_LIST_LIMIT:
                raise _Refused(f"limit must be an integer from 1 to {KV_MAX_LIST_LIMIT}")
            _spend(grant, len(prefix))
            try:
                page = grant.store.list(namespace, prefix, cursor, limit)
            except ValueError as exc:
                raise _Refused(str(exc)) from None
            _spend(grant, sum(len(k) for k in page.keys))
            return {"keys": list(page.keys)} | ({"cursor": page.cursor} if page.cursor is not None else {})
        key = _bytes_field(doc, "key")
        value = _bytes_field(doc, "value") if op == "put" else None
        ttl = doc.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
            raise _Refused("ttl must be a whole number of seconds")
        if (problem := kv_problem(key, value, ttl)) is not None:
            raise _Refused(problem)
        _spend(grant, len(key) + len(value or b""))
        if op == "get":
            found = grant.store.get(namespace, key)
            if found is None:
                return {"found": False}
            _spend(grant, len(found), after=True)
            return {"found": True, "value": found}
        if op == "put":
            assert value is not None
            grant.store.put(namespace, key, value, ttl)
            return {"ok": True}
        return {"deleted": grant.store.delete(namespace, key)}
    except _Refused as exc:
        return {"error": f"kv refused: {exc}"}
    except (ValueError, cbor2.CBORDecodeError) as exc:
        return {"error": f"kv refused: malformed request: {exc}"}
    except Exception as exc:  # noqa: BLE001 - the store failed (a database down): the guest is told, the host keeps serving
        return {"error": f"kv failed: {type(exc).__name__}: {exc}"}


def _spend(grant: KvGrant, n: int, after: bool = False) -> None:
    """Count `n` bytes against kv_bytes; a read that went over still counts, and its value is withheld."""
    grant.bytes += n
    if grant.bytes > grant.max_bytes:
        raise _Refused(f"over kv_bytes: {grant.max_bytes:,} bytes of keys and values in one invocation" + (" (this value is not returned)" if after else ""))


def guest_kv(request: bytes) -> bytes:
    """One KV call for the invocation on this thread: the CBOR answer. A store across the network (PostgreSQL) is
    waited on with the CPU slot given back, as a fetch is (runtime/scheduler.py)."""
    ctx = current_context()
    grant = ctx.kv
    if grant is not None and grant.store.remote and ctx.io_gate is not None:
        suspend, resume = ctx.io_gate
        suspend()
        try:
            doc = perform_kv(grant, request)
        finally:
            resume()
    else:
        doc = perform_kv(grant, request)
    if "error" in doc:
        ctx.note(2, doc["error"])
    return _native.cbor_encode(doc)


def _add(host: wc.LinkerInstance) -> None:
    add_bytes_function(host, "kv", guest_kv)


_core_kv, _core_kv_result = request_and_result(guest_kv, "pending_kv")

CAPABILITY = HostCapability("kv", {"kv": ([I32, I32], [I32], _core_kv), "kv_result": ([I32, I32], [I32], _core_kv_result)}, _add)
