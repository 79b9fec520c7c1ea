"""Secrets sealed at rest: AES-256-GCM under one key per app, bound to the function and name they belong to.

The key is `$EDGEFN_SECRETS_KEY` (32 bytes, base64) when set — what every node of a fleet shares — else a key
file edgefn creates on the first put, owner-only (`[app] secrets_key_file`). A value is decrypted only where it
is handed to a guest (the catalog a server runs); nothing else ever sees it in plain text.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets as _random
from pathlib import Path

from ..core.exceptions import SecretsKeyError
from ..core.records import SealedSecret

__all__ = ["KEY_ENV", "SecretBox"]

#: the environment variable holding the key (base64 of 32 bytes), which wins over the key file
KEY_ENV = "EDGEFN_SECRETS_KEY"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretBox:
    """Seals and opens secret values with the app's key (loaded once, created on the first seal if there is none)."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._key: bytes | None = None

    @property
    def source(self) -> str:
        return f"${KEY_ENV}" if os.environ.get(KEY_ENV) else str(self.key_file)

    def _load(self, create: bool) -> bytes:
        if self._key is not None:
            return self._key
        text = os.environ.get(KEY_ENV)
        if text:
            try:
                key = base64.b64decode(text.strip(), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != _KEY_BYTES:
                raise SecretsKeyError(f"${KEY_ENV} is not a key: give 32 bytes in base64 (make one with: head -c 32 /dev/urandom | base64)")
        else:
            key = self._read_or_create(create)
        self._key = key
        return key

    def _read_or_create(self, create: bool) -> bytes:
        try:
            raw = self.key_file.read_bytes()
        except FileNotFoundError:
            if not create:
                raise SecretsKeyError(
                    f"the secrets key file {self.key_file} is missing, so the secrets sealed with it cannot be read "
                    f"(restore it, or set ${KEY_ENV} to the key they were put with; or put them again)"
                ) from None
            return self._create()
        except OSError as exc:
            raise SecretsKeyError(f"cannot read the secrets key file {self.key_file}: {exc.strerror or exc}") from None
        if len(raw) != _KEY_BYTES:
            raise SecretsKeyError(f"the secrets key file {self.key_file} is {len(raw)} bytes, not a {_KEY_BYTES}-byte key (restore it from a backup)")
        return raw

    def _create(self) -> bytes:
        key = _random.token_bytes(_KEY_BYTES)
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # owner-only from the first byte
        except FileExistsError:
            return self._read_or_create(False)  # another process made it first: use theirs
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key

    def seal(self, function: str, name: str, value: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext) of `value`, bound to `function` and `name` (moved to another, it does not open)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = _random.token_bytes(_NONCE_BYTES)
        return nonce, AESGCM(self._load(create=True)).encrypt(nonce, value, _bound_to(function, name))

    def open(self, sealed: SealedSecret) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plain = AESGCM(self._load(create=False)).decrypt(sealed.nonce, sealed.ciphertext, _bound_to(sealed.function, sealed.name))
        except InvalidTag:
            raise SecretsKeyError(
                f"secret {sealed.name} of function {sealed.function!r} does not open with the key from {self.source}: "
                f"it was put with another key (set ${KEY_ENV} to that one, or put the secret again)"
            ) from None
        return plain.decode("utf-8", "replace")


def _bound_to(function: str, name: str) -> bytes:
    return f"edgefn secret\0{function}\0{name}".encode()
