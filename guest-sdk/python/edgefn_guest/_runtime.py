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

#: the marshal format of handle-marshal's results (the host's events come in format 2; guest-sdk/ABI.md section 8)
MARSHAL_VERSION = 4


def _marshal_dumps(doc: Any) -> bytes:
    return marshal.dumps(doc, MARSHAL_VERSION)


#: A MemoryError means the guest's allocator was refused memory (memory.grow failed under the host's
#: memory cap). The report is encoded now, at build time, so sending it needs no allocation.
_OUT_OF_MEMORY_DOC = {"errorType": "OutOfMemory", "errorMessage": "MemoryError: the function ran out of memory (manifest key 'memory_mb')"}
OUT_OF_MEMORY = _cbor.dumps(_OUT_OF_MEMORY_DOC)
OUT_OF_MEMORY_MARSHAL = _marshal_dumps(_OUT_OF_MEMORY_DOC)

#: one codec per export: (decode the event, encode the result, the out-of-memory result already encoded)
_Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes], bytes]
CBOR: _Codec = (_cbor.loads, _cbor.dumps, OUT_OF_MEMORY)
MARSHAL: _Codec = (marshal.loads, _marshal_dumps, OUT_OF_MEMORY_MARSHAL)


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
        loads, dumps, _ = MARSHAL if i % 2 else CBOR
        doc = loads(dumps(sample))
        Context(doc["config"])
        request = Request._from_document(doc["request"])
        response = Response._from_document(doc["response"])
        request.headers["x-warm"] = "1"
        response.headers.add("x-warm", "1")
        dumps(request._result())
        dumps(response._result())
        dumps(Response(404, "x", headers={"content-type": "text/plain"})._result())


def _error(error_type: str, message: str, dumps: Callable[[Any], bytes] = _cbor.dumps) -> bytes:
    return dumps({"errorType": error_type, "errorMessage": message[:4000]})


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
    return _handle(raw, CBOR)


def handle_marshal(raw: bytes) -> bytes:
    """The same with the event and the result as `marshal` documents (the edge-function-py world's
    handle-marshal): CPython encodes and decodes them in C, where the CBOR codec here is Python."""
    return _handle(raw, MARSHAL)


def _handle(raw: bytes, codec: _Codec) -> bytes:
    oom = False
    try:
        return _dispatch(raw, codec)
    except MemoryError:
        oom = True
    except BaseException as exc:  # noqa: BLE001 - a function's failure is a result document, never a trap
        if _caused_by_memory(exc):
            oom = True
        else:
            try:
                _log_exception(exc)
                return _error(type(exc).__name__, str(exc) or type(exc).__name__, codec[1])
            except MemoryError:
                oom = True
    # here the exception and its frames are gone, and with them whatever the function allocated
    assert oom
    return codec[2]


def _log_exception(exc: BaseException) -> None:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip("\n")
    for line in text.split("\n")[-40:]:
        _host.log(line, "error")


def _dispatch(raw: bytes, codec: _Codec) -> bytes:
    loads, dumps, _ = codec
    b = _bound
    if b.module is None:
        return _error("EdgefnUsageError", "no function module is bound (build the function with `edgefn build`)", dumps)
    try:
        doc = loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
            raise ValueError("the event must be a map with a 'request' map")
        context = Context(doc.get("config") or {})
        request = Request._from_document(doc["request"])
        response = Response._from_document(doc["response"]) if isinstance(doc.get("response"), dict) else None
    except (ValueError, TypeError, KeyError, EOFError) as exc:
        return _error("InvalidEvent", str(exc) or type(exc).__name__, dumps)

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
            dumps,
        )
    return dumps(_result(out, trigger, request, response))


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
