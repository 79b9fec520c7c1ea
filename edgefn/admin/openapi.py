"""The OpenAPI 3.1 description of the admin/invoke API (served at GET /openapi.json).

One entry per route of edgefn.control.api.ROUTES; tests/test_admin_api.py fails when the two differ.
"""

from __future__ import annotations

from typing import Any

F = "/2015-03-31/functions"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NAME = {"name": "name", "in": "path", "required": True, "description": "function name; on invocations also NAME:QUALIFIER", "schema": {"type": "string"}}
ALIAS = {"name": "alias", "in": "path", "required": True, "schema": {"type": "string"}}
ESM_UUID = {"name": "uuid", "in": "path", "required": True, "description": "the mapping's UUID, or a unique prefix of it", "schema": {"type": "string"}}
KV_NAMESPACE = {"name": "namespace", "in": "path", "required": True, "description": "a namespace the app's [kv] declares", "schema": {"type": "string"}}
KV_KEY = {"name": "key", "in": "path", "required": True, "description": "the key (UTF-8, percent-encoded; up to 512 bytes; may hold '/')", "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or {"type": "string"}}


def _qualifier(required: bool, what: str) -> dict[str, Any]:
    return {"name": "Qualifier", "in": "query", "required": required, "description": what, "schema": {"type": "string"}}


def _header(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


ERRORS = {
    "400": _json(_ref("Error"), "invalid parameter or request content (InvalidParameterValueException, InvalidRequestContentException)"),
    "401": _json(_ref("Error"), "missing or wrong bearer token"),
    "404": _json(_ref("Error"), "no such function, version or alias (ResourceNotFoundException)"),
}
NO_CONTENT = {"204": {"description": "done"}}


def _op(operation_id: str, summary: str, responses: dict[str, Any], parameters: list[dict[str, Any]] | None = None, body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "parameters": parameters or [], "responses": {**responses, **ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(body)}}}
    return op


INVOKE = _op(
    "Invoke",
    "Run a function. RequestResponse: 200 with the result document (or, when the function failed, its error with "
    "X-Amz-Function-Error). Event: 202, queued. DryRun: 204 after checking function, qualifier and payload.",
    {
        "200": {
            "description": "the result (or the function error)",
            "headers": {
                "X-Amz-Executed-Version": {"schema": {"type": "string"}, "description": "the version that ran"},
                "X-Amz-Function-Error": {"schema": {"type": "string", "enum": ["Handled", "Unhandled"]}},
                "X-Amz-Log-Result": {"schema": {"type": "string"}, "description": "base64 of the last 4 KB of the log (X-Amz-Log-Type: Tail)"},
                "x-amzn-RequestId": {"schema": {"type": "string"}},
            },
            "content": {"application/json": {"schema": {"oneOf": [_ref("ResultDocument"), _ref("FunctionErrorBody")]}}},
        },
        "202": {
            "description": "queued for asynchronous delivery (Event)",
            "headers": {
                "x-amzn-RequestId": {"schema": {"type": "string"}},
                "x-edgefn-duplicate": {"schema": {"type": "string", "enum": ["true"]}, "description": "the X-Amz-Invocation-Id was seen within the idempotency window: nothing new was queued"},
            },
        },
        "204": {"description": "the invocation would run (DryRun)"},
        "413": _json(_ref("Error"), "payload over 6 MB (1 MB for Event): RequestEntityTooLargeException"),
        "429": _json(_ref("Throttle"), "throttled: TooManyRequestsException, with Retry-After"),
        "502": _json(_ref("Error"), "the function's code cannot be loaded"),
    },
    [
        NAME,
        _qualifier(False, "version, alias or $LATEST (default)"),
        _header("X-Amz-Invocation-Type", "RequestResponse (default), Event or DryRun", ["RequestResponse", "Event", "DryRun"]),
        _header("X-Amz-Log-Type", "Tail: return the invocation's log in X-Amz-Log-Result", ["None", "Tail"]),
        _header("X-Amz-Invocation-Id", "Event only: a repeated id within the idempotency window is queued once"),
    ],
    body="EventDocument",
)

_FUNCTIONS_LIST = {"200": _json({"type": "object", "properties": {"Functions": {"type": "array", "items": _ref("FunctionConfiguration")}}}, "the functions")}

PATHS: dict[str, dict[str, Any]] = {
    F: {"get": _op("ListFunctions", "Every function, as its $LATEST configuration", _FUNCTIONS_LIST)},
    f"{F}/": {"get": _op("ListFunctionsWithSlash", "ListFunctions at the path Lambda's reference writes (its clients ask without the slash)", _FUNCTIONS_LIST)},
    f"{F}/{{name}}": {
        "get": _op(
            "GetFunction", "Configuration (of $LATEST or ?Qualifier), code digest, versions, aliases and concurrency",
            {"200": _json(_ref("Function"), "the function")}, [NAME, _qualifier(False, "version or alias whose configuration to show")],
        )
    },
    f"{F}/{{name}}/invocations": {"post": INVOKE},
    f"{F}/{{name}}/configuration": {
        "get": _op("GetFunctionConfiguration", "The configuration of $LATEST or ?Qualifier (GetFunction's Configuration)", {"200": _json(_ref("FunctionConfiguration"), "the configuration")}, [NAME, _qualifier(False, "version or alias")]),
        "put": _op("UpdateFunctionConfiguration", "Change $LATEST's configuration (checked with the manifest's rules)", {"200": _json(_ref("FunctionConfiguration"), "the new $LATEST")}, [NAME], "ConfigurationUpdate")
    },
    f"{F}/{{name}}/versions": {
        "post": _op("PublishVersion", "Freeze $LATEST as the next version (or return the newest one if nothing changed)", {"201": _json(_ref("FunctionConfiguration"), "the version"), "409": _json(_ref("Error"), "RevisionId does not match")}, [NAME], "PublishRequest"),
        "get": _op("ListVersionsByFunction", "$LATEST and every published version", {"200": _json({"type": "object", "properties": {"Versions": {"type": "array", "items": _ref("FunctionConfiguration")}}}, "the versions")}, [NAME]),
    },
    f"{F}/{{name}}/aliases": {
        "post": _op("CreateAlias", "Create an alias to a version, optionally weighted to a second one", {"201": _json(_ref("AliasConfiguration"), "the alias"), "409": _json(_ref("Error"), "the alias exists")}, [NAME], "CreateAliasRequest"),
        "get": _op("ListAliases", "The function's aliases", {"200": _json({"type": "object", "properties": {"Aliases": {"type": "array", "items": _ref("AliasConfiguration")}}}, "the aliases")}, [NAME]),
    },
    f"{F}/{{name}}/aliases/{{alias}}": {
        "get": _op("GetAlias", "One alias", {"200": _json(_ref("AliasConfiguration"), "the alias")}, [NAME, ALIAS]),
        "put": _op("UpdateAlias", "Change an alias (fields left out keep their value; RoutingConfig {} clears the weight)", {"200": _json(_ref("AliasConfiguration"), "the alias")}, [NAME, ALIAS], "UpdateAliasRequest"),
        "delete": _op("DeleteAlias", "Delete an alias", NO_CONTENT, [NAME, ALIAS]),
    },
    "/2017-10-31/functions/{name}/concurrency": {
        "put": _op("PutFunctionConcurrency", "Reserve (and cap) concurrent invocations; 0 throttles every invocation", {"200": _json(_ref("Concurrency"), "the reserve")}, [NAME], "Concurrency"),
        "get": _op("GetReservedConcurrency", "GetFunctionConcurrency at the date of PutFunctionConcurrency", {"200": _json(_ref("Concurrency"), "the reserve")}, [NAME]),
        "delete": _op("DeleteFunctionConcurrency", "Remove the reserve", NO_CONTENT, [NAME]),
    },
    "/2019-09-30/functions/{name}/concurrency": {
        "get": _op("GetFunctionConcurrency", "The reserve ({} when none)", {"200": _json(_ref("Concurrency"), "the reserve")}, [NAME]),
    },
    "/2019-09-30/functions/{name}/provisioned-concurrency": {
        "put": _op("PutProvisionedConcurrencyConfig", "Keep instances of a version or alias initialised", {"202": _json(_ref("ProvisionedConcurrency"), "requested")}, [NAME, _qualifier(True, "version or alias")], "ProvisionedConcurrencyRequest"),
        "get": _op("GetProvisionedConcurrencyConfig", "The requested count", {"200": _json(_ref("ProvisionedConcurrency"), "the setting")}, [NAME, _qualifier(True, "version or alias")]),
        "delete": _op("DeleteProvisionedConcurrencyConfig", "Remove the setting", NO_CONTENT, [NAME, _qualifier(True, "version or alias")]),
    },
    "/2026-12-01/cache/purges": {
        "post": _op("CreateCachePurge", "edgefn: drop cached responses in every server process of the app within about a second (edgefn cache purge)", {"201": _json(_ref("CachePurge"), "the purge, logged")}, [], "CachePurgeRequest"),
    },
    "/2015-03-31/event-source-mappings": {
        "get": _op("ListEventSourceMappings", "The app's polling event sources, their switches and counters (edgefn event-sources list)",
                   {"200": _json(_ref("EventSourceMappings"), "the mappings")}, [_query("FunctionName", "only this function's")]),
    },
    "/2015-03-31/event-source-mappings/{uuid}": {
        "get": _op("GetEventSourceMapping", "One mapping", {"200": _json(_ref("EventSourceMapping"), "the mapping")}, [ESM_UUID]),
        "put": _op("UpdateEventSourceMapping", "Turn a mapping's polling on or off on every node within a second (edgefn event-sources enable|disable)",
                   {"202": _json(_ref("EventSourceMapping"), "the mapping, switched")}, [ESM_UUID], "EventSourceMappingUpdate"),
    },
    "/2026-12-01/kv/namespaces": {
        "get": _op("ListKeyValueNamespaces", "edgefn: the namespaces the app's [kv] declares", {"200": _json(_ref("KvNamespaces"), "the namespaces")}),
    },
    "/2026-12-01/kv/namespaces/{namespace}/keys": {
        "get": _op(
            "ListKeys", "edgefn: one page of a namespace's keys in byte order (edgefn kv list)", {"200": _json(_ref("KvKeys"), "the keys, and the next page's cursor")},
            [KV_NAMESPACE, _query("prefix", "only keys starting with this"), _query("cursor", "the next page, as the previous one returned it"),
             _query("limit", "most keys in the page (1-1000)", {"type": "integer"})],
        ),
    },
    "/2026-12-01/kv/namespaces/{namespace}/values/{key}": {
        "get": _op("GetKeyValue", "edgefn: the value of a key, as stored (edgefn kv get)", {"200": {"description": "the value", "content": {"application/octet-stream": {}}}}, [KV_NAMESPACE, KV_KEY]),
        "put": {**_op("PutKeyValue", "edgefn: set a key; the body is the value, up to 25 MiB (edgefn kv put)", NO_CONTENT,
                      [KV_NAMESPACE, KV_KEY, _query("ttl", "the key expires this many seconds from now", {"type": "integer"})]),
                "requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
        "delete": _op("DeleteKeyValue", "edgefn: remove a key (edgefn kv delete)", NO_CONTENT, [KV_NAMESPACE, KV_KEY]),
    },
    "/openapi.json": {"get": _op("GetOpenApi", "This document", {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}})},
    "/metrics": {"get": _op("GetMetrics", "Prometheus metrics of the server process that answers (docs/observability.md)", {"200": {"description": "text exposition format 0.0.4", "content": {"text/plain": {}}}})},
}

_STR = {"type": "string"}
_INT = {"type": "integer"}
_WEIGHTS = {"type": "object", "additionalProperties": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "maxProperties": 1}
_ROUTING = {"type": "object", "properties": {"AdditionalVersionWeights": _WEIGHTS}}
_ENV = {"type": "object", "properties": {"Variables": {"type": "object", "additionalProperties": _STR}}}
_STORAGE = {"type": "object", "properties": {"Size": {"type": "integer", "description": "the cap of the private /tmp, MB"}}}

SCHEMAS: dict[str, Any] = {
    "EventSourceMapping": {
        "type": "object",
        "properties": {
            "UUID": _STR, "FunctionArn": _STR, "EventSourceArn": _STR, "Source": _STR, "Target": _STR, "Kind": {"type": "string", "enum": ["queue", "stream"]},
            "BatchSize": _INT, "ScalingConfig": {"type": "object", "properties": {"MaximumConcurrency": _INT}},
            "State": {"type": "string", "enum": ["Enabled", "Disabled"]}, "LastProcessingResult": _STR, "LastProcessed": {"type": ["string", "null"]},
            "LastModified": _STR, "Counters": {"type": "object", "additionalProperties": _INT},
        },
    },
    "EventSourceMappings": {"type": "object", "properties": {"EventSourceMappings": {"type": "array", "items": _ref("EventSourceMapping")}}},
    "EventSourceMappingUpdate": {"type": "object", "additionalProperties": False, "required": ["Enabled"], "properties": {"Enabled": {"type": "boolean"}}},
    "KvNamespaces": {"type": "object", "properties": {"Namespaces": {"type": "array", "items": {"type": "object", "properties": {"Name": _STR}}}}},
    "KvKeys": {
        "type": "object", "properties": {
            "Keys": {"type": "array", "items": {"type": "object", "properties": {"Name": _STR}}},
            "Cursor": {"type": "string", "description": "absent on the last page"},
        },
    },
    "CachePurgeRequest": {
        "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        "properties": {
            "Path": {"type": "string", "pattern": "^/", "description": "a request path, any query string; a trailing * purges every path under it"},
            "Prefix": {"type": "string", "pattern": "^/"}, "Tag": {"type": "string", "minLength": 1, "description": "a key the origin sent in Cache-Tag or Surrogate-Key"},
            "All": {"const": True},
        },
    },
    "CachePurge": {"type": "object", "properties": {"Id": _INT, "Kind": {"enum": ["path", "prefix", "tag", "all"]}, "Value": _STR, "CreateTime": _STR}},
    "Error": {"type": "object", "properties": {"Type": {"enum": ["User", "Service"]}, "Message": _STR}, "description": "the error name is in the x-amzn-ErrorType header"},
    "Throttle": {"type": "object", "properties": {"Type": _STR, "message": _STR, "Reason": {"enum": ["ConcurrentInvocationLimitExceeded", "ReservedFunctionConcurrentInvocationLimitExceeded"]}}},
    "EventDocument": {
        "type": "object", "required": ["request"],
        "description": "an event as `edgefn events sample` prints it: config (eventType, ...), request, and response for response triggers",
        "properties": {"config": {"type": "object"}, "request": {"type": "object"}, "response": {"type": "object"}},
    },
    "ResultDocument": {"type": "object", "description": "the request or response the function returned (bodies as text, or base64 with encoding)"},
    "FunctionErrorBody": {"type": "object", "properties": {"errorType": _STR, "errorMessage": _STR}},
    "FunctionConfiguration": {
        "type": "object",
        "properties": {
            "FunctionName": _STR, "Version": _STR, "CodeSha256": {"type": "string", "description": "hex SHA-256 of the wasm (the module store digest)"},
            "Description": _STR, "MemorySize": {"type": "integer", "description": "memory, MB: the cap on linear memory, and the CPU share and default Fuel"},
            "EphemeralStorage": _STORAGE,
            "Timeout": {"type": "number", "description": "wall-clock limit, seconds"}, "Environment": _ENV, "LastModified": _STR, "RevisionId": _STR,
            "Fuel": {"type": "integer", "description": "edgefn: CPU budget per invocation, wasm instructions (default: 15,625,000 per MB of MemorySize)"},
            "MaxResultBytes": {"type": "integer", "description": "edgefn: largest result document"},
            "AllowedHosts": {"type": "array", "items": _STR, "description": "edgefn: hosts the function may fetch from"},
            "ReuseInstances": {"type": "boolean", "description": "edgefn: keep warm instances between requests"},
            "Prewarm": {"type": "integer", "description": "edgefn: warm instances made at start-up"},
            "Target": {"type": "string", "description": "edgefn: build target (read-only)"},
            "Layers": {"type": "array", "items": {"type": "object", "properties": {"Arn": _STR}}, "description": "the layer versions its code was built with"},
        },
    },
    "ConfigurationUpdate": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "MemorySize": _INT, "Timeout": {"type": "number"}, "Environment": _ENV, "Fuel": _INT, "MaxResultBytes": _INT,
            "AllowedHosts": {"type": "array", "items": _STR}, "ReuseInstances": {"type": "boolean"}, "Prewarm": _INT, "EphemeralStorage": _STORAGE,
        },
    },
    "Function": {
        "type": "object",
        "properties": {
            "Configuration": _ref("FunctionConfiguration"), "Code": {"type": "object", "properties": {"CodeSha256": _STR}},
            "Versions": {"type": "array", "items": {"type": "object", "properties": {"Version": _STR, "CodeSha256": _STR, "Description": _STR, "LastModified": _STR}}},
            "Aliases": {"type": "array", "items": _ref("AliasConfiguration")},
            "Concurrency": _ref("Concurrency"),
            "ProvisionedConcurrency": {"type": "object", "additionalProperties": _INT, "description": "qualifier -> instances"},
        },
    },
    "PublishRequest": {"type": "object", "additionalProperties": False, "properties": {"Description": _STR, "RevisionId": {"type": "string", "description": "publish only if $LATEST still has this RevisionId"}}},
    "AliasConfiguration": {"type": "object", "properties": {"Name": _STR, "FunctionVersion": _STR, "Description": _STR, "RoutingConfig": _ROUTING, "LastModified": _STR}},
    "CreateAliasRequest": {"type": "object", "required": ["Name", "FunctionVersion"], "additionalProperties": False, "properties": {"Name": _STR, "FunctionVersion": _STR, "Description": _STR, "RoutingConfig": _ROUTING}},
    "UpdateAliasRequest": {"type": "object", "additionalProperties": False, "properties": {"FunctionVersion": _STR, "Description": _STR, "RoutingConfig": _ROUTING}},
    "Concurrency": {"type": "object", "properties": {"ReservedConcurrentExecutions": {"type": "integer", "minimum": 0}}},
    "ProvisionedConcurrencyRequest": {"type": "object", "required": ["ProvisionedConcurrentExecutions"], "properties": {"ProvisionedConcurrentExecutions": {"type": "integer", "minimum": 1}}},
    "ProvisionedConcurrency": {"type": "object", "properties": {"RequestedProvisionedConcurrentExecutions": _INT}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgefn admin and invoke API", "version": "1", "description": "Lambda's wire format for invoking and managing edgefn functions; see docs/admin-api.md"},
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "the token in the environment variable named by admin.token_env"}}},
        "security": [{"bearer": []}],
        "paths": PATHS,
    }
