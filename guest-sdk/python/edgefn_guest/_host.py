"""The host's imports (log, env, fetch, kv), reached through the component's `edgefn:function/host` bindings.

Inside a component built by `edgefn build` these call the generated `wit_world` bindings. On a plain
CPython (unit tests of a function, the SDK's own tests) they go to edgefn_guest.testing.LocalHost.
"""

from __future__ import annotations

from typing import Any, Protocol

from . import _cbor

LEVELS = ("debug", "info", "warn", "error")


class HostBackend(Protocol):
    def log(self, level: str, message: str) -> None: ...
    def env_get(self, name: str) -> str | None: ...
    def fetch(self, request: bytes) -> bytes: ...
    def kv(self, request: bytes) -> bytes: ...


class _WitHost:
    """The real imports, from the bindings componentize-py generates for the edgefn:function world."""

    def __init__(self) -> None:
        from wit_world.imports import host  # only exists inside the component

        self._host = host
        self._levels = {name: getattr(host.Level, name.upper()) for name in LEVELS}
        #: env values already asked for: an instance's env never changes (the host gives a function whose env
        #: changed new instances), and a host call costs more than the rest of a small handler
        self._env: dict[str, str | None] = {}

    def new_instance(self) -> None:
        """Forget what was asked before this instance's first invocation (at build time, say)."""
        self._env.clear()

    def log(self, level: str, message: str) -> None:
        self._host.log(self._levels.get(level, self._levels["info"]), message)

    def env_get(self, name: str) -> str | None:
        try:
            return self._env[name]
        except KeyError:
            value = self._env[name] = self._host.env_get(name)
            return value

    def fetch(self, request: bytes) -> bytes:
        return self._host.fetch(request)

    def kv(self, request: bytes) -> bytes:
        return self._host.kv(request)


_backend: HostBackend | None = None


def install(backend: HostBackend | None) -> None:
    """Use `backend` for log/env/fetch/kv (None: the component's real imports)."""
    global _backend
    _backend = backend


def current() -> HostBackend | None:
    """The backend installed now (None: the component's imports, made on first use)."""
    return _backend


def new_instance() -> None:
    """An instance's first invocation: drop what the backend remembers from before (the build's snapshot)."""
    forget = getattr(_backend, "new_instance", None)
    if forget is not None:
        forget()


def backend() -> HostBackend:
    global _backend
    if _backend is None:
        try:
            _backend = _WitHost()
        except ImportError:  # a plain CPython (a unit test of a handler): a local host with no env
            from .testing import LocalHost

            _backend = LocalHost()
    return _backend


# --- the public functions ----------------------------------------------------------------------------


def log(message: Any, level: str = "info") -> None:
    """One line in the function's log stream; `level` is "debug", "info", "warn" or "error"."""
    backend().log(level if level in LEVELS else "info", message if isinstance(message, str) else str(message))


def debug(message: Any) -> None:
    log(message, "debug")


def info(message: Any) -> None:
    log(message, "info")


def warn(message: Any) -> None:
    log(message, "warn")


def error(message: Any) -> None:
    log(message, "error")


def env(name: str, default: str | None = None) -> str | None:
    """The function's environment variable `name` (its manifest `env`), or `default` if unset.

    Read it inside a handler or `init()`, not at module level: the module's top level runs at build time.
    """
    value = backend().env_get(name)
    return default if value is None else value


class FetchError(Exception):
    """An outbound request was refused (host not in allowed_hosts), failed, or timed out."""


def fetch(url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None):  # type: ignore[no-untyped-def]
    """Make one outbound HTTP request; returns a Response (status, headers, body) or raises FetchError.

    Only the hosts in the function's manifest `allowed_hosts` are reached. The call blocks for at most
    what is left of the invocation's `timeout_ms`.
    """
    from ._model import Headers, Response

    doc: dict[str, Any] = {"method": method.upper(), "url": url}
    if headers is not None:
        doc["headers"] = Headers(headers)._document()
    if body is not None:
        doc["body"] = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    result = _cbor.loads(backend().fetch(_cbor.dumps(doc)))
    if not isinstance(result, dict) or "error" in result:
        raise FetchError(result.get("error", "malformed fetch result") if isinstance(result, dict) else "malformed fetch result")
    return Response._from_fetch(result)
