"""edgefn guest SDK for Python: write edge functions as plain Python handlers.

    from edgefn_guest import Request, Response, env

    def viewer_request(request: Request) -> Request | Response | None:
        if request.headers.get("authorization") != "Bearer " + env("TOKEN", ""):
            return Response(401, "no\\n", headers={"WWW-Authenticate": "Bearer"})
        return request

`edgefn build` turns the module into a WebAssembly component (componentize-py) that exports the
edgefn:function world's `handle`; the SDK hides the CBOR documents and the WIT bindings.
See guest-sdk/python/README.md.
"""

from . import _kv as kv
from ._host import FetchError, debug, env, error, fetch, info, log, warn
from ._kv import KvError
from ._model import Context, EdgefnUsageError, Event, Headers, Request, Response

__all__ = [
    "Context",
    "EdgefnUsageError",
    "Event",
    "FetchError",
    "Headers",
    "KvError",
    "Request",
    "Response",
    "debug",
    "env",
    "error",
    "fetch",
    "info",
    "kv",
    "log",
    "warn",
]

__version__ = "1.0.0"
