"""`edgefn secret put|list|delete FUNCTION …`: secrets a function reads through its env API, sealed at rest.

A value comes from standard input or a file, never from the command line (argv is visible to every user of
the machine, and stays in shell history). Nothing here ever prints one.
"""

from __future__ import annotations

import datetime
import getpass
import sys
from pathlib import Path
from typing import TextIO

from ..control.deploy import control_store_of
from ..control.secrets import SecretBox
from ..core.exceptions import EdgefnError
from ..core.records import SECRET_NAME
from ..manifest.load import load_manifest
from ..manifest.resolve import secrets_key_file
from ..manifest.schema import Manifest

__all__ = ["SECRET_MAX_BYTES", "secret_command"]

#: the largest secret value (Workers: 5 KiB); a PEM private key fits
SECRET_MAX_BYTES = 32 * 1024


def _function(config: Path, manifest: Manifest, function: str) -> None:
    if function not in manifest.functions:
        raise EdgefnError(f"secret: no function {function!r} in {config} (functions: {', '.join(sorted(manifest.functions)) or 'none'})")


def _name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
        raise EdgefnError(f"secret: {name!r} is not a secret name: use letters, digits and '_', not starting with a digit (as an environment variable)")
    return name


def _read_value(file: Path | None) -> bytes:
    if file is not None:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise EdgefnError(f"secret put: cannot read {file}: {exc.strerror or exc}") from None
    elif sys.stdin.isatty():
        raw = getpass.getpass("secret value (not echoed): ").encode()
    else:
        raw = sys.stdin.buffer.read(SECRET_MAX_BYTES + 2)
    if raw.endswith(b"\n"):  # `echo value |` and files end with one newline that is not part of the value
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if not raw:
        raise EdgefnError("secret put: the value is empty (give it on standard input or with --file F)")
    if len(raw) > SECRET_MAX_BYTES:
        raise EdgefnError(f"secret put: the value is over {SECRET_MAX_BYTES:,} bytes")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgefnError("secret put: the value is not UTF-8 text (a guest reads it as an environment variable); base64 binary data first") from None
    return raw


def secret_command(action: str, config: Path, function: str, name: str | None, file: Path | None, out: TextIO, if_missing: bool = False) -> int:
    manifest = load_manifest(config)
    _function(config, manifest, function)
    store = control_store_of(config, manifest)
    try:
        if action == "list":
            names = store.secrets.names(function)
            for secret, when in names:
                stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                print(f"{secret:32} set {stamp}", file=out)
            if not names:
                print(f"function {function!r} has no secrets (edgefn secret put {function} NAME < value-file)", file=sys.stderr)
            return 0
        assert name is not None
        secret = _name(name)
        if action == "delete":
            if not store.secrets.delete(function, secret):
                raise EdgefnError(f"secret delete: function {function!r} has no secret {secret}")
            print(f"secret {secret} of {function} deleted: $LATEST no longer reads it (published versions that captured it still do)", file=out)
            return 0
        if if_missing and any(have == secret for have, _ in store.secrets.names(function)):
            print(f"secret {secret} of {function} is already set: kept (--if-missing)", file=out)
            return 0
        box = SecretBox(secrets_key_file(manifest, config.resolve().parent))
        value = _read_value(file)
        nonce, sealed = box.seal(function, secret, value)
        put = store.secrets.put(function, secret, nonce, sealed)
        print(f"secret {secret} of {function} stored (generation {put.generation}, encrypted with the key from {box.source}); "
              f"running servers read it within about a second", file=out)
        return 0
    finally:
        store.close()
