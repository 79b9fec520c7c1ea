"""The key-value store, to the namespaces the function's manifest grants (`kv = ["visits"]`; docs/kv.md).

    from edgefn_guest import kv

    visits = kv.namespace("visits")
    count = int(visits.get_text(request.uri) or 0) + 1
    visits.put(request.uri, str(count))

Keys and values are bytes (text is sent as UTF-8). Each call is one host call and counts against the
invocation's `kv_ops` and `kv_bytes`; a refusal or failure raises KvError with the host's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from . import _cbor
from ._host import backend

__all__ = ["KvError", "KvPage", "Namespace", "namespace"]


class KvError(Exception):
    """A key-value call was refused (a namespace not granted, kv_ops or kv_bytes spent, a key over 512 bytes,
    a value over 25 MiB) or failed in the host."""


@dataclass(frozen=True)
class KvPage:
    """One page of keys in byte order; `cursor` asks for the next page (None: this was the last)."""

    keys: list[bytes]
    cursor: str | None


def _b(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class Namespace:
    """One key-value namespace the function was granted."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _call(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc["namespace"] = self.name
        result = _cbor.loads(backend().kv(_cbor.dumps(doc)))
        if not isinstance(result, dict):
            raise KvError("malformed answer from the host")
        if "error" in result:
            raise KvError(result["error"])
        return result

    def get(self, key: bytes | str) -> bytes | None:
        """The value of `key`, or None if it has none (or it expired)."""
        result = self._call({"op": "get", "key": _b(key)})
        return result.get("value") if result.get("found") else None

    def get_text(self, key: bytes | str) -> str | None:
        value = self.get(key)
        return None if value is None else value.decode("utf-8", "replace")

    def put(self, key: bytes | str, value: bytes | str, ttl: int | None = None) -> None:
        """Set `key` to `value`; `ttl` (whole seconds, at least 1) makes it expire."""
        doc: dict[str, Any] = {"op": "put", "key": _b(key), "value": _b(value)}
        if ttl is not None:
            doc["ttl"] = int(ttl)
        self._call(doc)

    def delete(self, key: bytes | str) -> bool:
        """Remove `key`; True if it had a value."""
        return bool(self._call({"op": "delete", "key": _b(key)}).get("deleted"))

    def list(self, prefix: bytes | str = b"", cursor: str | None = None, limit: int = 1000) -> KvPage:
        """One page of the keys starting with `prefix`, after `cursor` (what the previous page returned)."""
        doc: dict[str, Any] = {"op": "list", "prefix": _b(prefix), "limit": limit}
        if cursor is not None:
            doc["cursor"] = cursor
        result = self._call(doc)
        return KvPage(list(result.get("keys", [])), result.get("cursor"))

    def keys(self, prefix: bytes | str = b"") -> Iterator[bytes]:
        """Every key starting with `prefix`, following the cursor page by page (each page is one operation)."""
        cursor: str | None = None
        while True:
            page = self.list(prefix, cursor)
            yield from page.keys
            if page.cursor is None:
                return
            cursor = page.cursor


def namespace(name: str) -> Namespace:
    """The namespace `name` (one of the function's manifest `kv` grants)."""
    return Namespace(name)
