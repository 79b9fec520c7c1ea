"""`edgefn kv get|put|delete|list NAMESPACE …`: the app's key-value store, as its functions see it (docs/kv.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO, TextIO

from ..control.store import open_kv_of
from ..core.exceptions import EdgefnError
from ..core.ports import KeyValueStore
from ..core.records import KV_MAX_VALUE_BYTES, kv_problem
from ..manifest.load import load_manifest
from ..manifest.resolve import kv_settings
from ..manifest.schema import Manifest

__all__ = ["kv_command", "kv_store_of"]


def kv_store_of(config: Path, manifest: Manifest) -> KeyValueStore | None:
    """The key-value store a manifest's [kv] names (None when it declares no namespace), as the CLI opens it."""
    return open_kv_of(kv_settings(manifest, config.resolve().parent))


def _store(config: Path, namespace: str) -> KeyValueStore:
    manifest = load_manifest(config)
    if namespace not in manifest.kv.namespaces:
        declared = ", ".join(manifest.kv.namespaces) or "none"
        raise EdgefnError(f"kv: namespace {namespace!r} is not declared in {config} (declared: {declared}); add it to [kv] namespaces")
    store = kv_store_of(config, manifest)
    assert store is not None
    return store


def _key(text: str) -> bytes:
    key = text.encode()
    if (problem := kv_problem(key)) is not None:
        raise EdgefnError(f"kv: {problem}")
    return key


def _value(value: str | None, file: Path | None, stdin: BinaryIO) -> bytes:
    if value is not None:
        return value.encode()
    if file is not None:
        try:
            if file.stat().st_size > KV_MAX_VALUE_BYTES:
                raise EdgefnError(f"kv: {file} is over the {KV_MAX_VALUE_BYTES:,}-byte value limit (25 MiB)")
            return file.read_bytes()
        except OSError as exc:
            raise EdgefnError(f"kv: cannot read {file}: {exc.strerror or exc}") from None
    if sys.stdin.isatty():
        raise EdgefnError("kv put: give the value as an argument, with --file F, or on standard input")
    return stdin.read(KV_MAX_VALUE_BYTES + 1)


def kv_command(
    action: str, config: Path, namespace: str, key: str | None, *, value: str | None = None, file: Path | None = None, ttl: int | None = None,
    prefix: str = "", cursor: str | None = None, limit: int = 1000, as_json: bool = False, out: TextIO = sys.stdout,
) -> int:
    store = _store(config, namespace)
    try:
        if action == "get":
            assert key is not None
            found = store.get(namespace, _key(key))
            if found is None:
                raise EdgefnError(f"kv get: {key!r} has no value in {namespace}")
            out.flush()
            sys.stdout.buffer.write(found)  # the value as stored, byte for byte (pipe it to a file)
            sys.stdout.buffer.flush()
            return 0
        if action == "put":
            assert key is not None
            data = _value(value, file, sys.stdin.buffer)
            k = _key(key)
            if (problem := kv_problem(k, data, ttl)) is not None:
                raise EdgefnError(f"kv put: {problem}")
            store.put(namespace, k, data, ttl)
            expiry = f", expires in {ttl} s" if ttl else ""
            print(f"{namespace} {key!r}: {len(data):,} bytes stored{expiry}", file=out)
            return 0
        if action == "delete":
            assert key is not None
            deleted = store.delete(namespace, _key(key))
            print(f"{namespace} {key!r}: {'deleted' if deleted else 'had no value'}", file=out)
            return 0
        try:
            page = store.list(namespace, prefix.encode(), cursor, limit)
        except ValueError as exc:
            raise EdgefnError(f"kv list: {exc}") from None
        names = [k.decode("utf-8", "backslashreplace") for k in page.keys]
        if as_json:
            print(json.dumps({"keys": names, "cursor": page.cursor}, indent=2), file=out)
        else:
            for name in names:
                print(name, file=out)
            if page.cursor is not None:
                print(f"more keys: edgefn kv list {namespace} --prefix '{prefix}' --cursor {page.cursor}", file=sys.stderr)
        return 0
    finally:
        store.close()
