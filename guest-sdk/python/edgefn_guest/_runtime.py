"""The bridge between the WIT `handle` export and a function module's plain-Python handlers.

`edgefn build` generates the component's entry module, which imports the function module (at build
time: its top level is snapshotted into the component), calls `bind(module)` and routes every
`handle(event)` call here. `handle` never raises: every failure becomes an ABI v1 result document.
"""

from __future__ import annotations

import inspect
import marshal
import traceback
from types import ModuleType
from typing import Any, Callable

from . import _cbor, _host
from ._model import REQUEST_TRIGGERS, TRIGGERS, Context, EdgefnUsageError, Event, Request, Response

#: A MemoryError means the guest's allocator was refused memory (memory.grow failed under the host's
#: memory cap). The report is encoded now, at build time, so sending it needs no allocation.
OUT_OF_MEMORY = _cbor.dumps(
    {"errorType": "OutOfMemory", "errorMessage": "MemoryError: the function ran out of memory (manifest key 'memory_mb')"}
)


class _Bound:
    def __init__(self) -> None:
        self.module: ModuleType | None = None
        self.handlers: dict[str, tuple[Callable[..., Any], int]] = {}
        self.generic: Callable[..., Any] | None = None
        self.init: Callable[[], Any] | None = None
        self.initialized = False


_bound = _Bound()


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    count = 0
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return 99
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def bind(module: ModuleType) -> None:
    """Find the module's handlers: one per trigger (viewer_request, ...), or a generic handler(event)."""
    b = _Bound()
    b.module = module
    for trigger in TRIGGERS:
        fn = getattr(module, trigger.replace("-", "_"), None)
        if callable(fn):
            b.handlers[trigger] = (fn, _positional_count(fn))
    generic = getattr(module, "handler", None)
    b.generic = generic if callable(generic) else None
    init = getattr(module, "init", None)
    b.init = init if callable(init) else None
    if not b.handlers and b.generic is None:
        raise EdgefnUsageError(
            f"module {module.__name__!r} defines no handler: define viewer_request(request), origin_request(request), "
            "origin_response(response, request), viewer_response(response, request) or handler(event)"
        )
    global _bound
    _bound = b
    _prepare()


def _prepare() -> None:
    """Do at build time what every instance would otherwise do on its first request: import the WIT
    bindings, and run the SDK's own event and result code once (never the function's) so that what the
    interpreter caches and specialises on first use is already in the snapshot."""
    try:
        _host.backend()
    except ImportError:  # on a plain CPython (tests): no bindings
        pass
    headers = {"host": [{"key": "Host", "value": "example.test"}], "accept": [{"key": "Accept", "value": "*/*"}]}
    sample = {
        "config": {"eventType": "origin-response", "requestId": "warm-up", "distributionDomainName": "", "distributionId": "", "functionName": ""},
        "request": {"clientIp": "127.0.0.1", "method": "GET", "uri": "/", "querystring": "a=1", "headers": headers,
                    "body": {"data": b"x", "inputTruncated": False}},
        "response": {"status": 200, "statusDescription": "OK", "headers": headers},
    }
    for i in range(8):
        doc = marshal.loads(marshal.dumps(sample, 4)) if i % 2 else _cbor.loads(_cbor.dumps(sample))
        Context(doc["config"])
        request = Request._from_document(doc["request"])
        response = Response._from_document(doc["response"])
        request.headers["x-warm"] = "1"
        response.headers.add("x-warm", "1")
        _cbor.dumps(request._result())
        _cbor.dumps(response._result())
        _cbor.dumps(Response(404, "x", headers={"content-type": "text/plain"})._result())


def _error(error_type: str, message: str) -> bytes:
    return _cbor.dumps({"errorType": error_type, "errorMessage": message[:4000]})


def _caused_by_memory(exc: BaseException) -> bool:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 16:
        if isinstance(cur, MemoryError):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def handle(raw: bytes) -> bytes:
    """One invocation: CBOR event in, CBOR result out. Never raises."""
    return _handle(raw, _cbor.loads)


def handle_marshal(raw: bytes) -> bytes:
    """The same with the event as a `marshal` document (the edge-function-py world's handle-marshal)."""
    return _handle(raw, marshal.loads)


def _handle(raw: bytes, loads: Callable[[bytes], Any]) -> bytes:
    oom = False
    try:
        return _dispatch(raw, loads)
    except MemoryError:
        oom = True
    except BaseException as exc:  # noqa: BLE001 - a function's failure is a result document, never a trap
        if _caused_by_memory(exc):
            oom = True
        else:
            try:
                _log_exception(exc)
                return _error(type(exc).__name__, str(exc) or type(exc).__name__)
            except MemoryError:
                oom = True
    # here the exception and its frames are gone, and with them whatever the function allocated
    assert oom
    return OUT_OF_MEMORY


def _log_exception(exc: BaseException) -> None:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip("\n")
    for line in text.split("\n")[-40:]:
        _host.log(line, "error")


def _dispatch(raw: bytes, loads: Callable[[bytes], Any]) -> bytes:
    b = _bound
    if b.module is None:
        return _error("EdgefnUsageError", "no function module is bound (build the function with `edgefn build`)")
    try:
        doc = loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
            raise ValueError("the event must be a map with a 'request' map")
        context = Context(doc.get("config") or {})
        request = Request._from_document(doc["request"])
        response = Response._from_document(doc["response"]) if isinstance(doc.get("response"), dict) else None
    except (ValueError, TypeError, KeyError, EOFError) as exc:
        return _error("InvalidEvent", str(exc) or type(exc).__name__)

    if not b.initialized:  # once per instance: the first invocation of a fresh (or newly pooled) instance
        _host.new_instance()
        if b.init is not None:
            b.init()
    b.initialized = True

    trigger = context.event_type
    if trigger in b.handlers:
        fn, nargs = b.handlers[trigger]
        if trigger in REQUEST_TRIGGERS:
            args: tuple[Any, ...] = (request, context)[: max(1, min(nargs, 2))]
        else:
            args = (response, request, context)[: max(1, min(nargs, 3))]
        out = fn(*args)
    elif b.generic is not None:
        out = b.generic(Event(context, request, response))
    else:
        defined = ", ".join(t.replace("-", "_") for t in b.handlers) or "none"
        return _error(
            "EdgefnUsageError",
            f"this function has no {trigger.replace('-', '_')} handler (defined: {defined}); "
            "check the manifest's trigger or add the handler",
        )
    return _cbor.dumps(_result(out, trigger, request, response))


def _result(out: Any, trigger: str, request: Request, response: Response | None) -> dict[str, Any]:
    if trigger in REQUEST_TRIGGERS:
        if out is None:
            return {}  # continue with the request unchanged
        if isinstance(out, (Request, Response)):
            return out._result()
        raise EdgefnUsageError(f"a {trigger} handler returns a Request, a Response or None, not {type(out).__name__}")
    if out is None:
        assert response is not None
        return {"status": response.status}  # keep the response as it came
    if isinstance(out, Response):
        return out._result()
    raise EdgefnUsageError(f"a {trigger} handler returns a Response or None, not {type(out).__name__}")


#: where `edgefn dev` mounts a function's own sources (read-only) in its Python runtime component
SOURCES_MOUNT = "/app"


def load_sources(module_name: str) -> bytes:
    """`edgefn dev`'s instance start: import the function module from the read-only SOURCES_MOUNT and bind it,
    as a production build does at build time. The answer is a CBOR map: {} when bound, else Lambda's init
    error (`Runtime.UserCodeSyntaxError` / `Runtime.ImportModuleError`) with where it happened in the sources."""
    import importlib
    import sys

    if SOURCES_MOUNT not in sys.path:
        sys.path.insert(0, SOURCES_MOUNT)
    try:
        bind(importlib.import_module(module_name))
    except SyntaxError as exc:
        where = {"file": exc.filename or "", "line": exc.lineno or 0, "column": exc.offset or 0}
        return _cbor.dumps({"errorType": "Runtime.UserCodeSyntaxError", "errorMessage": f"{type(exc).__name__}: {exc.msg}", **where})
    except BaseException as exc:  # noqa: BLE001 - an import failure is the answer, never a trap
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(SOURCES_MOUNT + "/")]
        last = frames[-1] if frames else None
        where = {"file": last.filename, "line": last.lineno or 0, "column": (last.colno or 0) + 1 if last.colno is not None else 0} if last else {}
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        doc: dict[str, Any] = {"errorType": "Runtime.ImportModuleError", "errorMessage": f"{type(exc).__name__}: {exc}", **where}
        if missing:
            doc["missingModule"] = missing
        return _cbor.dumps(doc)
    return _cbor.dumps({})
