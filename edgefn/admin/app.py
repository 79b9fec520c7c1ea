"""The admin and invoke API: Lambda's paths, headers and JSON names, over the node's registry and runtime.

Served on its own listener (edgefn.control.admin_listener), behind a bearer token checked before any
routing. Every route is listed in ROUTES and described in edgefn.control.openapi (a test keeps the two
in step). Handlers find the node in `request.app.state.node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Protocol, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..control.async_invoke import AsyncInvoker
from ..control.catalog import LiveCatalog, parse_config
from ..control.store.queue import MAX_PAYLOAD_BYTES
from ..core import events
from ..core.app import FunctionSpec
from ..core.exceptions import (
    ConcurrencyConfigError,
    Conflict,
    EdgefnError,
    FunctionPending,
    InvocationError,
    ManifestError,
    ModuleRejected,
    RegistryError,
    StorageError,
    Throttled,
    UnknownFunction,
    error_document,
    status_by_class,
)
from ..core.ids import new_request_id
from ..core.ports import EventSourceStore, KeyValueStore, PurgeLog, Registry
from ..core.records import (
    KV_MAX_LIST_LIMIT,
    KV_MAX_VALUE_BYTES,
    LATEST,
    AliasRecord,
    CodeAndConfig,
    FunctionRecord,
    FunctionRef,
    RegistrySnapshot,
    kv_problem,
    purge_problem,
)
from ..manifest.resolve import config_record, limits_of
from ..manifest.schema import FunctionConfig
from ..observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..observability.metrics import EdgeMetrics
from ..runtime.concurrency import check_reservation_change
from ..runtime.invoker import Invocation
from .auth import AdminAuth
from .log_tail import InvocationLogs, tail
from .openapi import document


class NodeServices(Protocol):
    """What the admin API needs of the node it runs in (edgefn/node.py's EdgeNode implements it)."""

    registry: Registry
    catalog: LiveCatalog
    async_invoker: AsyncInvoker
    metrics: EdgeMetrics
    stop_event: asyncio.Event
    #: the cache purges every server process of the app follows (node.py applies them)
    purges: PurgeLog
    #: the app's key-value store (None: its [kv] declares no namespace), and the namespaces it declares
    kv: KeyValueStore | None
    kv_namespaces: tuple[str, ...]
    #: the event source mappings' switches and counters (docs/event-sources.md)
    event_source_mappings: EventSourceStore

    @property
    def max_concurrency(self) -> int:
        """server.max_concurrency: reservations must leave part of it unreserved."""
        ...

    async def invoke(self, fn: FunctionSpec, event: events.Event) -> Invocation:
        """One synchronous invocation on this node's runtime (limits, metrics and logs as on the edge path)."""
        ...

FUNCTIONS = "/2015-03-31/functions"
CONCURRENCY = "/2017-10-31/functions"
PROVISIONED = "/2019-09-30/functions"
#: edgefn's own: purge the edge caches (edgefn cache purge); the date is this API's version, as AWS dates theirs
PURGES = "/2026-12-01/cache/purges"
#: edgefn's own: the key-value store (edgefn kv), shaped as Workers KV's API is
KV = "/2026-12-01/kv/namespaces"
#: Lambda's ListEventSourceMappings, GetEventSourceMapping, UpdateEventSourceMapping (Enabled)
EVENT_SOURCES = "/2015-03-31/event-source-mappings"

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # Lambda: 6 MB request payload for RequestResponse
#: a configuration update re-reads and retries this often when $LATEST changes under it (then 409)
CONFIG_WRITE_ATTEMPTS = 3
ASYNC_PAYLOAD_LIMIT = MAX_PAYLOAD_BYTES  # Lambda: 1 MB for Event (the queue's own limit)
CONTROL_BODY_LIMIT = 256 * 1024  # a configuration or alias document is small
MAX_RESERVED = 100_000  # as the manifest's functions.NAME.reserved_concurrency
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
THROTTLE_RETRY_AFTER_S = 1

#: API field of FunctionConfiguration -> manifest key of [functions.NAME], for PUT .../configuration
UPDATABLE = {
    "MemorySize": "memory_mb",
    "Timeout": "timeout_ms",
    "Environment": "env",
    "Fuel": "fuel",
    "EphemeralStorage": "ephemeral_storage_mb",
    "MaxResultBytes": "max_result_bytes",
    "AllowedHosts": "allowed_hosts",
    "ReuseInstances": "reuse_instances",
    "Prewarm": "prewarm",
}

access_log = logging.getLogger("edgefn.admin")
T = TypeVar("T")


class ApiError(EdgefnError):
    """A request the API refuses: HTTP status, Lambda's error name (x-amzn-ErrorType) and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


#: the Lambda API's answer (HTTP status, x-amzn-ErrorType) per class of error raised below it
API_ERRORS: dict[type[BaseException], tuple[int, str]] = {
    UnknownFunction: (404, "ResourceNotFoundException"),
    Throttled: (429, "TooManyRequestsException"),
    FunctionPending: (502, "ResourceNotReadyException"),
    ModuleRejected: (502, "ModuleRejectedException"),
    ConcurrencyConfigError: (400, "InvalidParameterValueException"),
    ManifestError: (400, "InvalidParameterValueException"),
    # the control plane is unreachable: an event cannot be made durable, so it is refused, never accepted (202)
    StorageError: (503, "ServiceUnavailableException"),
}


def api_error(exc: EdgefnError, message: str | None = None) -> ApiError:
    """`exc` as the API answers it (API_ERRORS; a RegistryError carries its own status and code)."""
    if isinstance(exc, RegistryError):
        return ApiError(exc.status, exc.code, message or str(exc))
    status, code = status_by_class(API_ERRORS, exc, (500, "ServiceException"))
    return ApiError(status, code, message or str(exc))


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"Type": "User" if status < 500 else "Service", "Message": message}
    return JSONResponse(body, status, {"x-amzn-ErrorType": code, **(headers or {})})


def _node(request: Request) -> NodeServices:
    node: NodeServices = request.app.state.node
    return node


async def _blocking(call: Callable[..., T], *args: Any) -> T:
    """A registry call off the event loop (SQLite blocks; the edge app shares this loop)."""
    return await asyncio.to_thread(call, *args)


async def _applied(node: NodeServices) -> None:
    """Make a write visible to this process at once (other processes poll within a second)."""
    try:
        await node.catalog.refresh()
    except (EdgefnError, OSError) as exc:
        logging.getLogger("edgefn.control.catalog").error("registry change not applied yet, the watch retries: %s", exc)


async def _read_body(request: Request, limit: int, operation: str) -> bytes:
    """The body, refused with 413 past `limit` without reading (or keeping) more than that."""
    length = request.headers.get("content-length", "")
    too_large = ApiError(413, "RequestEntityTooLargeException", f"Request must be smaller than {limit} bytes for the {operation} operation")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request, operation: str) -> dict[str, Any]:
    raw = await _read_body(request, CONTROL_BODY_LIMIT, operation)
    if not raw.strip():
        return {}
    try:
        doc = events.json_document(raw)
    except ValueError as exc:
        raise ApiError(400, "InvalidRequestContentException", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "InvalidRequestContentException", "the request body must be a JSON object")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, default: Any = None) -> Any:
    value = doc.get(name, default)
    if value is None or (isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)):
        return value
    raise ApiError(400, "InvalidParameterValueException", f"{name} must be {what}, got {json.dumps(value)}")


def _unknown_fields(doc: dict[str, Any], allowed: tuple[str, ...] | list[str]) -> None:
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise ApiError(400, "InvalidParameterValueException", f"unknown field {extra[0]!r}; allowed: {', '.join(allowed)}")


# --- documents -------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    """Lambda's LastModified format."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _seconds(ms: int) -> int | float:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def configuration_doc(name: str, version: str, code: CodeAndConfig, modified: float, description: str = "", revision_id: str | None = None) -> dict[str, Any]:
    """FunctionConfiguration: Lambda's names, plus edgefn's own (Fuel, MaxResultBytes, AllowedHosts, ...)."""
    cfg = parse_config(code.config, name, "registry")
    doc: dict[str, Any] = {
        "FunctionName": name,
        "Version": version,
        "CodeSha256": code.digest,
        "Description": description,
        "MemorySize": cfg.memory_mb,
        "Timeout": _seconds(cfg.timeout_ms),
        "EphemeralStorage": {"Size": cfg.ephemeral_storage_mb},
        "Environment": {"Variables": dict(cfg.env)},
        "LastModified": _iso(modified),
        "Fuel": limits_of(cfg).fuel,  # the budget in force: explicit, or what MemorySize buys
        "MaxResultBytes": cfg.max_result_bytes,
        "AllowedHosts": list(cfg.allowed_hosts),
        "ReuseInstances": cfg.reuse_instances,
        "Prewarm": cfg.prewarm,
        "Target": cfg.target,
        "Layers": [{"Arn": f"edgefn:layer:{ref}"} for ref in cfg.layers],
    }
    if revision_id is not None:
        doc["RevisionId"] = revision_id
    return doc


def _latest_doc(fn: FunctionRecord) -> dict[str, Any]:
    return configuration_doc(fn.name, LATEST, fn.latest, fn.updated_at, revision_id=fn.revision_id)


def alias_doc(alias: AliasRecord) -> dict[str, Any]:
    weights = {str(alias.extra_version): alias.extra_weight} if alias.extra_version is not None else {}
    return {
        "Name": alias.name,
        "FunctionVersion": str(alias.version),
        "Description": alias.description,
        "RoutingConfig": {"AdditionalVersionWeights": weights},
        "LastModified": _iso(alias.updated_at),
    }


def _function_view(snap: RegistrySnapshot, name: str, qualifier: str | None) -> dict[str, Any]:
    fn = snap.functions.get(name)
    if fn is None:
        raise ApiError(404, "ResourceNotFoundException", f"function {name!r} is not in the registry; deploy it first (edgefn deploy)")
    versions = sorted((v for (n, _), v in snap.versions.items() if n == name), key=lambda v: v.version)
    aliases = sorted((a for (n, _), a in snap.aliases.items() if n == name), key=lambda a: a.name)
    configuration = _latest_doc(fn)
    if qualifier not in (None, LATEST):
        alias = snap.aliases.get((name, qualifier))
        number = alias.version if alias is not None else int(qualifier) if qualifier.isdigit() else None
        chosen = snap.versions.get((name, number)) if number is not None else None
        if chosen is None:
            raise ApiError(404, "ResourceNotFoundException", f"function {name!r} has no version or alias {qualifier!r}")
        configuration = configuration_doc(name, str(chosen.version), chosen.code, chosen.created_at, chosen.description)
    view: dict[str, Any] = {
        "Configuration": configuration,
        "Code": {"CodeSha256": configuration["CodeSha256"]},
        "Versions": [{"Version": str(v.version), "CodeSha256": v.code.digest, "Description": v.description, "LastModified": _iso(v.created_at)} for v in versions],
        "Aliases": [alias_doc(a) for a in aliases],
        "ProvisionedConcurrency": {q: n for (f, q), n in sorted(snap.provisioned.items()) if f == name},
    }
    if fn.reserved_concurrency is not None:
        view["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved_concurrency}
    return view


# --- invoke ----------------------------------------------------------------------------------------


def _invoked_ref(request: Request) -> FunctionRef:
    """`name`, `name:qualifier` in the path, and/or ?Qualifier= (they must agree)."""
    ref = FunctionRef.parse(request.path_params["name"])
    qualifier = request.query_params.get("Qualifier")
    if qualifier:
        if ":" in request.path_params["name"] and ref.qualifier != qualifier:
            raise ApiError(400, "InvalidParameterValueException", f"the qualifier in the function name ({ref.qualifier!r}) does not match the Qualifier parameter ({qualifier!r})")
        ref = FunctionRef(ref.name, qualifier)
    return ref


def _event(payload: bytes, function: str, request_id: str) -> events.Event:
    """The payload as an event document {"config"?, "request", "response"?}; 400 when it is not one."""
    try:
        event = events.event_from_json(payload)
    except events.ResultError as exc:
        raise ApiError(400, "InvalidRequestContentException", f"Could not parse request body into an event: {exc}") from None
    event.config = replace(event.config, request_id=request_id, function_name=function)
    return event


async def invoke(request: Request) -> Response:
    node = _node(request)
    ref = _invoked_ref(request)
    kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
    if kind not in INVOCATION_TYPES:
        raise ApiError(400, "InvalidParameterValueException", f"X-Amz-Invocation-Type {kind!r} must be one of {', '.join(INVOCATION_TYPES)}")
    limit = ASYNC_PAYLOAD_LIMIT if kind == "Event" else SYNC_PAYLOAD_LIMIT
    payload = await _read_body(request, limit, "Invoke")
    rid = new_request_id()
    event = _event(payload, ref.name, rid)
    problem = node.catalog.current.check(str(ref))
    if problem is not None:
        raise ApiError(404, "ResourceNotFoundException", problem)
    if kind == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": rid})
    if kind == "Event":
        return await _submit(node, ref, payload, request.headers.get("x-amz-invocation-id"))
    return await _invoke_sync(request, node, ref, event, tail_wanted=request.headers.get("x-amz-log-type") == "Tail")


async def _submit(node: NodeServices, ref: FunctionRef, payload: bytes, invocation_id: str | None) -> Response:
    try:
        request_id, duplicate = await node.async_invoker.submit(str(ref), payload, invocation_id)
    except UnknownFunction as exc:
        raise api_error(exc, exc.detail) from None
    except StorageError as exc:
        raise api_error(exc) from None
    headers = {"x-amzn-RequestId": request_id}
    if duplicate:  # the invocation id was seen within queue.idempotency_window_s: nothing new was queued
        headers["x-edgefn-duplicate"] = "true"
    return Response(status_code=202, headers=headers)


async def _invoke_sync(request: Request, node: NodeServices, ref: FunctionRef, event: events.Event, tail_wanted: bool) -> Response:
    rid = event.config.request_id
    try:
        spec = node.catalog.select(str(ref), rid)
    except UnknownFunction as exc:
        raise api_error(exc, exc.detail) from None
    logs: InvocationLogs = request.app.state.logs
    headers = {"x-amzn-RequestId": rid, "X-Amz-Executed-Version": spec.version}
    capture: contextlib.AbstractContextManager[list[str]] = logs.capture(spec.name, rid) if tail_wanted else contextlib.nullcontext([])
    with capture as lines:
        try:
            done = await node.invoke(spec, event)
            body: dict[str, Any] = events.to_json_document(done.result)
        except Throttled as exc:
            reason = getattr(exc, "reason", None) or "ConcurrentInvocationLimitExceeded"
            return JSONResponse(
                {"Type": "User", "message": "Rate Exceeded.", "Reason": reason}, 429,
                {"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": str(THROTTLE_RETRY_AFTER_S), "x-amzn-RequestId": rid},
            )
        except InvocationError as exc:  # Handled: the guest reported it; Unhandled: a trap, a limit, an invalid result
            body = error_document(exc)
            headers["X-Amz-Function-Error"] = "Handled" if exc.handled else "Unhandled"
        except ModuleRejected as exc:  # the code cannot be loaded: the environment failed, as Lambda's 502
            failed = api_error(exc)
            return error_response(failed.status, failed.code, str(exc), {"x-amzn-RequestId": rid})
    if tail_wanted:
        headers["X-Amz-Log-Result"] = tail(lines)
    return JSONResponse(body, 200, headers)


# --- functions, versions, configuration ------------------------------------------------------------


async def list_functions(request: Request) -> Response:
    records = await _blocking(_node(request).registry.list_functions)
    return JSONResponse({"Functions": [_latest_doc(fn) for fn in records]})


async def get_function(request: Request) -> Response:
    snap = await _blocking(_node(request).registry.snapshot)
    return JSONResponse(_function_view(snap, request.path_params["name"], request.query_params.get("Qualifier")))


async def get_configuration(request: Request) -> Response:
    """Lambda's GetFunctionConfiguration: the Configuration part of GetFunction."""
    snap = await _blocking(_node(request).registry.snapshot)
    return JSONResponse(_function_view(snap, request.path_params["name"], request.query_params.get("Qualifier"))["Configuration"])


def _config_changes(doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest keys a configuration update sets, from Lambda's field names."""
    _unknown_fields(doc, list(UPDATABLE))
    changes: dict[str, Any] = {}
    for api_name, key in UPDATABLE.items():
        if api_name not in doc:
            continue
        value = doc[api_name]
        if api_name == "Timeout":
            seconds = _field(doc, "Timeout", (int, float), "a number of seconds")
            value = round(seconds * 1000) if seconds is not None else None
        elif api_name == "Environment":
            env = _field(doc, "Environment", dict, 'an object {"Variables": {NAME: VALUE}}') or {}
            _unknown_fields(env, ["Variables"])
            value = _field(env, "Variables", dict, "an object of names to string values", {})
        elif api_name == "EphemeralStorage":
            storage = _field(doc, "EphemeralStorage", dict, 'an object {"Size": MB}') or {}
            _unknown_fields(storage, ["Size"])
            value = _field(storage, "Size", int, "an integer number of MB")
        if value is None:
            raise ApiError(400, "InvalidParameterValueException", f"{api_name} may not be null")
        changes[key] = value
    return changes


async def update_configuration(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    where = f"PUT {FUNCTIONS}/{name}/configuration"
    changes = _config_changes(await _read_json(request, "UpdateFunctionConfiguration"))
    for attempt in range(CONFIG_WRITE_ATTEMPTS):  # a read-modify-write: a deploy in between must not be overwritten
        record = await _blocking(node.registry.get_function, name)
        merged = {**record.latest.config, **changes}
        # the reserve lives in its own column, which writing $LATEST also sets: keep what the API set
        merged.pop("reserved_concurrency", None)
        if record.reserved_concurrency is not None:
            merged["reserved_concurrency"] = record.reserved_concurrency
        try:
            cfg = _checked_config(merged, name, where)
        except ManifestError as exc:
            api_name = next((a for a, k in UPDATABLE.items() if exc.key.split(".")[-1].split("[")[0] == k), None)
            raise ApiError(400, "InvalidParameterValueException", f"{api_name + ': ' if api_name else ''}{exc}") from None
        try:
            updated, _ = await _blocking(node.registry.put_latest, name, CodeAndConfig(record.latest.digest, config_record(cfg)), record.revision_id)
            break
        except Conflict:
            if attempt == CONFIG_WRITE_ATTEMPTS - 1:
                raise
    await _applied(node)
    return JSONResponse(_latest_doc(updated))


def _checked_config(doc: dict[str, Any], name: str, where: str) -> FunctionConfig:
    """The manifest's rules for [functions.NAME], including the ones across keys."""
    cfg = parse_config(doc, name, where)
    if cfg.prewarm and not cfg.reuse_instances:
        raise ManifestError(where, f"functions.{name}.prewarm", "prewarmed instances are only used by a function that reuses instances", "set ReuseInstances to true, or Prewarm to 0")
    return cfg


async def publish_version(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    doc = await _read_json(request, "PublishVersion")
    _unknown_fields(doc, ["Description", "RevisionId"])
    description = _field(doc, "Description", str, "a string", "")
    revision_id = _field(doc, "RevisionId", str, "a string")
    version, _ = await _blocking(node.registry.publish, name, description, revision_id)
    await _applied(node)
    return JSONResponse(configuration_doc(name, str(version.version), version.code, version.created_at, version.description), 201)


async def list_versions(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    fn = await _blocking(node.registry.get_function, name)
    versions = await _blocking(node.registry.list_versions, name)
    docs = [_latest_doc(fn)] + [configuration_doc(name, str(v.version), v.code, v.created_at, v.description) for v in versions]
    return JSONResponse({"Versions": docs})


# --- aliases ---------------------------------------------------------------------------------------


def _routing(doc: dict[str, Any], default: tuple[int | None, float]) -> tuple[int | None, float]:
    """(extra version, weight) from RoutingConfig {"AdditionalVersionWeights": {"3": 0.1}}: at most one."""
    if "RoutingConfig" not in doc:
        return default
    routing = _field(doc, "RoutingConfig", dict, 'an object {"AdditionalVersionWeights": {"VERSION": WEIGHT}}') or {}
    _unknown_fields(routing, ["AdditionalVersionWeights"])
    weights = _field(routing, "AdditionalVersionWeights", dict, 'an object {"VERSION": WEIGHT}', {})
    if not weights:
        return None, 0.0
    if len(weights) > 1:
        raise ApiError(400, "InvalidParameterValueException", "AdditionalVersionWeights: an alias routes to at most two versions, so give at most one additional version")
    (version, weight), = weights.items()
    if not str(version).isdigit() or isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ApiError(400, "InvalidParameterValueException", f"AdditionalVersionWeights: use a published version number and a weight between 0 and 1, got {json.dumps(weights)}")
    return int(version), float(weight)


def _version_number(doc: dict[str, Any], default: int | None) -> int:
    value = _field(doc, "FunctionVersion", str, "a published version number as a string")
    if value is None and default is not None:
        return default
    if value is None or not value.isdigit():
        raise ApiError(400, "InvalidParameterValueException", f"FunctionVersion must be a published version number such as \"1\" (an alias cannot point to $LATEST here), got {json.dumps(value)}")
    return int(value)


async def create_alias(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    doc = await _read_json(request, "CreateAlias")
    _unknown_fields(doc, ["Name", "FunctionVersion", "Description", "RoutingConfig"])
    alias_name = _field(doc, "Name", str, "a string")
    if not alias_name:
        raise ApiError(400, "InvalidParameterValueException", "Name is required: the alias name")
    version = _version_number(doc, None)
    extra, weight = _routing(doc, (None, 0.0))
    existing = await _blocking(node.registry.list_aliases, name)
    if any(a.name == alias_name for a in existing):
        raise ApiError(409, "ResourceConflictException", f"alias {alias_name!r} of {name!r} already exists; change it with PUT {FUNCTIONS}/{name}/aliases/{alias_name}")
    record = AliasRecord(name, alias_name, version, extra, weight, _field(doc, "Description", str, "a string", ""))
    saved = await _blocking(node.registry.set_alias, record)
    await _applied(node)
    return JSONResponse(alias_doc(saved), 201)


async def list_aliases(request: Request) -> Response:
    aliases = await _blocking(_node(request).registry.list_aliases, request.path_params["name"])
    return JSONResponse({"Aliases": [alias_doc(a) for a in aliases]})


async def get_alias(request: Request) -> Response:
    alias = await _blocking(_node(request).registry.get_alias, request.path_params["name"], request.path_params["alias"])
    return JSONResponse(alias_doc(alias))


async def update_alias(request: Request) -> Response:
    node, name, alias_name = _node(request), request.path_params["name"], request.path_params["alias"]
    doc = await _read_json(request, "UpdateAlias")
    _unknown_fields(doc, ["FunctionVersion", "Description", "RoutingConfig"])
    current = await _blocking(node.registry.get_alias, name, alias_name)
    version = _version_number(doc, current.version)
    extra, weight = _routing(doc, (current.extra_version, current.extra_weight))
    description = _field(doc, "Description", str, "a string", current.description)
    saved = await _blocking(node.registry.set_alias, AliasRecord(name, alias_name, version, extra, weight, description))
    await _applied(node)
    return JSONResponse(alias_doc(saved))


async def delete_alias(request: Request) -> Response:
    node = _node(request)
    await _blocking(node.registry.delete_alias, request.path_params["name"], request.path_params["alias"])
    await _applied(node)
    return Response(status_code=204)


# --- concurrency -----------------------------------------------------------------------------------


async def put_reserved(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    doc = await _read_json(request, "PutFunctionConcurrency")
    _unknown_fields(doc, ["ReservedConcurrentExecutions"])
    reserved = _field(doc, "ReservedConcurrentExecutions", int, "an integer")
    if reserved is None or not 0 <= reserved <= MAX_RESERVED:
        raise ApiError(400, "InvalidParameterValueException", f"ReservedConcurrentExecutions must be an integer from 0 to {MAX_RESERVED:,} (0 throttles every invocation)")
    current = {f.name: f.reserved_concurrency for f in await _blocking(node.registry.list_functions)}
    try:  # refuse what the servers would refuse to apply (10% of server.max_concurrency stays unreserved)
        check_reservation_change(node.max_concurrency, current, name, reserved)
    except ConcurrencyConfigError as exc:
        raise api_error(exc) from None
    await _blocking(node.registry.set_reserved_concurrency, name, reserved)
    await _applied(node)
    return JSONResponse({"ReservedConcurrentExecutions": reserved})


async def get_reserved(request: Request) -> Response:
    fn = await _blocking(_node(request).registry.get_function, request.path_params["name"])
    return JSONResponse({} if fn.reserved_concurrency is None else {"ReservedConcurrentExecutions": fn.reserved_concurrency})


async def delete_reserved(request: Request) -> Response:
    node = _node(request)
    await _blocking(node.registry.set_reserved_concurrency, request.path_params["name"], None)
    await _applied(node)
    return Response(status_code=204)


async def list_event_sources(request: Request) -> Response:
    """ListEventSourceMappings (?FunctionName=NAME filters)."""
    function = request.query_params.get("FunctionName")
    states = await _blocking(_node(request).event_source_mappings.list)
    docs = [s.document() for s in states if function is None or s.function.partition(":")[0] == function]
    return JSONResponse({"EventSourceMappings": docs})


async def get_event_source(request: Request) -> Response:
    state = await _blocking(_node(request).event_source_mappings.get, request.path_params["uuid"])
    return JSONResponse(state.document())


async def update_event_source(request: Request) -> Response:
    """UpdateEventSourceMapping: {"Enabled": true|false} turns its polling on or off on every node within a second."""
    doc = await _read_json(request, "UpdateEventSourceMapping")
    _unknown_fields(doc, ["Enabled"])
    enabled = _field(doc, "Enabled", bool, "true or false")
    if enabled is None:
        raise ApiError(400, "InvalidParameterValueException", "give Enabled: true or false")
    state = await _blocking(_node(request).event_source_mappings.set_enabled, request.path_params["uuid"], enabled)
    return JSONResponse(state.document(), status_code=202)


async def create_purge(request: Request) -> Response:
    """One purge for every server process: {"Path": "/x"} (a trailing * is a prefix), {"Prefix": ...}, {"Tag": ...}
    or {"All": true}; 201 with its id, applied by each process within its poll interval."""
    doc = await _read_json(request, "CreateCachePurge")
    _unknown_fields(doc, ["Path", "Prefix", "Tag", "All"])
    given = [k for k in ("Path", "Prefix", "Tag", "All") if k in doc]
    if len(given) != 1:
        raise ApiError(400, "InvalidParameterValueException", "give exactly one of Path, Prefix, Tag or All")
    key = given[0]
    if key == "All":
        if doc["All"] is not True:
            raise ApiError(400, "InvalidParameterValueException", "All must be true")
        kind, value = "all", ""
    else:
        value = _field(doc, key, str, "a string") or ""
        kind = key.lower()
        if (problem := purge_problem(kind, value)) is not None:
            raise ApiError(400, "InvalidParameterValueException", f"{key}: {problem}")
    purge = await _blocking(_node(request).purges.add, kind, value)
    created = datetime.fromtimestamp(purge.created_at, timezone.utc).isoformat(timespec="milliseconds")
    return JSONResponse({"Id": purge.id, "Kind": kind, "Value": value, "CreateTime": created}, status_code=201)


def _kv_of(request: Request) -> tuple[KeyValueStore, str]:
    node = _node(request)
    namespace = request.path_params["namespace"]
    if node.kv is None or namespace not in node.kv_namespaces:
        declared = ", ".join(node.kv_namespaces) or "none"
        raise ApiError(404, "ResourceNotFoundException", f"namespace {namespace!r} is not declared in the app's [kv] namespaces (declared: {declared})")
    return node.kv, namespace


def _kv_key(request: Request) -> bytes:
    key = str(request.path_params["key"]).encode()
    if (problem := kv_problem(key)) is not None:
        raise ApiError(400, "InvalidParameterValueException", f"key: {problem}")
    return key


async def list_kv_namespaces(request: Request) -> Response:
    return JSONResponse({"Namespaces": [{"Name": n} for n in _node(request).kv_namespaces]})


async def list_kv_keys(request: Request) -> Response:
    """A page of keys in byte order: ?prefix=, ?cursor= (from the previous page), ?limit= (1-1000)."""
    store, namespace = _kv_of(request)
    q = request.query_params
    try:
        limit = int(q.get("limit", KV_MAX_LIST_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= KV_MAX_LIST_LIMIT:
        raise ApiError(400, "InvalidParameterValueException", f"limit must be an integer from 1 to {KV_MAX_LIST_LIMIT}")
    try:
        page = await _blocking(store.list, namespace, q.get("prefix", "").encode(), q.get("cursor"), limit)
    except ValueError as exc:
        raise ApiError(400, "InvalidParameterValueException", f"cursor: {exc}") from None
    keys = [{"Name": k.decode("utf-8", "backslashreplace")} for k in page.keys]
    return JSONResponse({"Keys": keys, "Cursor": page.cursor} if page.cursor is not None else {"Keys": keys})


async def get_kv_value(request: Request) -> Response:
    store, namespace = _kv_of(request)
    value = await _blocking(store.get, namespace, _kv_key(request))
    if value is None:
        raise ApiError(404, "ResourceNotFoundException", f"key {request.path_params['key']!r} has no value in {namespace}")
    return Response(value, media_type="application/octet-stream")


async def put_kv_value(request: Request) -> Response:
    """The body, as is, is the value; ?ttl=SECONDS makes it expire."""
    store, namespace = _kv_of(request)
    key = _kv_key(request)
    ttl_text = request.query_params.get("ttl")
    ttl = int(ttl_text) if ttl_text is not None and ttl_text.isdigit() else None
    if ttl_text is not None and ttl is None:
        raise ApiError(400, "InvalidParameterValueException", "ttl must be a whole number of seconds")
    value = await _read_body(request, KV_MAX_VALUE_BYTES, "PutKeyValue")
    if (problem := kv_problem(key, value, ttl)) is not None:
        raise ApiError(400, "InvalidParameterValueException", problem)
    await _blocking(store.put, namespace, key, value, ttl)
    return Response(status_code=204)


async def delete_kv_value(request: Request) -> Response:
    store, namespace = _kv_of(request)
    if not await _blocking(store.delete, namespace, _kv_key(request)):
        raise ApiError(404, "ResourceNotFoundException", f"key {request.path_params['key']!r} has no value in {namespace}")
    return Response(status_code=204)


def _provisioned_qualifier(request: Request) -> str:
    qualifier = request.query_params.get("Qualifier")
    if not qualifier:
        raise ApiError(400, "InvalidParameterValueException", "Qualifier is required: a published version or an alias (not $LATEST)")
    return qualifier


async def _provisioned(request: Request, name: str, qualifier: str) -> int:
    snap = await _blocking(_node(request).registry.snapshot)
    if name not in snap.functions:
        raise ApiError(404, "ResourceNotFoundException", f"function {name!r} is not in the registry; deploy it first (edgefn deploy)")
    count = snap.provisioned.get((name, qualifier), 0)
    if not count:
        raise ApiError(404, "ProvisionedConcurrencyConfigNotFoundException", f"no provisioned concurrency is configured for {name}:{qualifier}")
    return count


async def put_provisioned(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    qualifier = _provisioned_qualifier(request)
    doc = await _read_json(request, "PutProvisionedConcurrencyConfig")
    _unknown_fields(doc, ["ProvisionedConcurrentExecutions"])
    count = _field(doc, "ProvisionedConcurrentExecutions", int, "an integer")
    if count is None or count < 1:
        raise ApiError(400, "InvalidParameterValueException", "ProvisionedConcurrentExecutions must be an integer of 1 or more (DELETE removes the setting)")
    await _blocking(node.registry.set_provisioned_concurrency, name, qualifier, count)
    await _applied(node)
    return JSONResponse({"RequestedProvisionedConcurrentExecutions": count}, 202)


async def get_provisioned(request: Request) -> Response:
    name = request.path_params["name"]
    count = await _provisioned(request, name, _provisioned_qualifier(request))
    return JSONResponse({"RequestedProvisionedConcurrentExecutions": count})


async def delete_provisioned(request: Request) -> Response:
    node, name = _node(request), request.path_params["name"]
    qualifier = _provisioned_qualifier(request)
    await _provisioned(request, name, qualifier)
    await _blocking(node.registry.set_provisioned_concurrency, name, qualifier, 0)
    await _applied(node)
    return Response(status_code=204)


async def openapi(_: Request) -> Response:
    return JSONResponse(document())


async def metrics(request: Request) -> Response:
    """Prometheus metrics of the server process that answers (docs/observability.md)."""
    text = await asyncio.to_thread(_node(request).metrics.exposition)  # scrape-time gauges may read the database
    return Response(text, media_type=METRICS_CONTENT_TYPE)


# --- the route table (edgefn.control.openapi describes each; tests/test_admin_api.py checks both ways) ---

ROUTES: list[BaseRoute] = [
    # Lambda's own clients ask without the slash (botocore's model), its reference documents it with one
    Route(FUNCTIONS, list_functions, methods=["GET"]),
    Route(f"{FUNCTIONS}/", list_functions, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}", get_function, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}/invocations", invoke, methods=["POST"]),
    Route(f"{FUNCTIONS}/{{name}}/configuration", update_configuration, methods=["PUT"]),
    Route(f"{FUNCTIONS}/{{name}}/configuration", get_configuration, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}/versions", publish_version, methods=["POST"]),
    Route(f"{FUNCTIONS}/{{name}}/versions", list_versions, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}/aliases", create_alias, methods=["POST"]),
    Route(f"{FUNCTIONS}/{{name}}/aliases", list_aliases, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}/aliases/{{alias}}", get_alias, methods=["GET"]),
    Route(f"{FUNCTIONS}/{{name}}/aliases/{{alias}}", update_alias, methods=["PUT"]),
    Route(f"{FUNCTIONS}/{{name}}/aliases/{{alias}}", delete_alias, methods=["DELETE"]),
    Route(f"{CONCURRENCY}/{{name}}/concurrency", put_reserved, methods=["PUT"]),
    Route(f"{CONCURRENCY}/{{name}}/concurrency", get_reserved, methods=["GET"]),
    Route(f"{PROVISIONED}/{{name}}/concurrency", get_reserved, methods=["GET"]),  # GetFunctionConcurrency's own date
    Route(f"{CONCURRENCY}/{{name}}/concurrency", delete_reserved, methods=["DELETE"]),
    Route(f"{PROVISIONED}/{{name}}/provisioned-concurrency", put_provisioned, methods=["PUT"]),
    Route(f"{PROVISIONED}/{{name}}/provisioned-concurrency", get_provisioned, methods=["GET"]),
    Route(f"{PROVISIONED}/{{name}}/provisioned-concurrency", delete_provisioned, methods=["DELETE"]),
    Route(PURGES, create_purge, methods=["POST"]),
    Route(EVENT_SOURCES, list_event_sources, methods=["GET"]),
    Route(f"{EVENT_SOURCES}/{{uuid}}", get_event_source, methods=["GET"]),
    Route(f"{EVENT_SOURCES}/{{uuid}}", update_event_source, methods=["PUT"]),
    Route(KV, list_kv_namespaces, methods=["GET"]),
    Route(f"{KV}/{{namespace}}/keys", list_kv_keys, methods=["GET"]),
    Route(f"{KV}/{{namespace}}/values/{{key:path}}", get_kv_value, methods=["GET"]),
    Route(f"{KV}/{{namespace}}/values/{{key:path}}", put_kv_value, methods=["PUT"]),
    Route(f"{KV}/{{namespace}}/values/{{key:path}}", delete_kv_value, methods=["DELETE"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    # more operational routes (GET /metrics) go here, each with its entry in edgefn.control.openapi
]


# --- errors, auth, access log ----------------------------------------------------------------------


async def _api_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc))
    assert isinstance(exc, RegistryError)
    return error_response(exc.status, exc.code, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(405, "MethodNotAllowedException", f"{request.method} is not allowed on {request.scope['path']}")
    return error_response(exc.status_code, "UnknownOperationException", f"no operation at {request.method} {request.scope['path']} (see GET /openapi.json)")


class AdminAccessLog:
    """One JSON line per admin request (never its headers: they carry the token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access_log.info(json.dumps({"admin": True, "method": scope["method"], "path": scope["path"], "status": status, "duration_ms": round((time.perf_counter() - start) * 1000, 3)}))


def create_admin_app(node: NodeServices, token: str | None) -> ASGIApp:
    """The admin/invoke app of `node`; `token` None serves without authentication (loopback only)."""
    app = Starlette(
        routes=ROUTES,
        exception_handlers={ApiError: _api_error, RegistryError: _api_error, HTTPException: _http_error},
    )
    app.state.node = node
    app.state.logs = InvocationLogs()
    return AdminAccessLog(AdminAuth(app, token))
