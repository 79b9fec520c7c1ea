"""Every error edgefn raises on purpose, in one tree.

Each carries what a user needs to act on it (the function, the request id, the file and key, the limit or
rule) and says it in its message. An invocation failure has two names: `kind` (snake case, for logs,
metrics, REPORT's Outcome and `x-edgefn-error`) and `error_type` (Lambda's `errorType`: the class name, or
the guest's own for a FunctionError), the one vocabulary of every error document (`error_document`). Who
answers with what status is decided by class, one table per audience: the viewer's
(`edge/responses.py`), the Lambda API's (`admin/app.py`), the async record's (`control/async_invoke.py`).

    EdgefnError
    ├── ManifestError            a manifest problem: file, key path, bad value, fix
    ├── BuildError               a compiler refused a source (Diagnostic: file:line:column)
    ├── LayerError               a layer cannot be published, fetched or used (edgefn layer, functions.NAME.layers)
    ├── ScaffoldError            `edgefn init` cannot write the project
    ├── ModuleRejected           a wasm module cannot be a function (at load, before any instance)
    │   ├── ImportNotAllowed
    │   │   └── ComponentImportNotAllowed
    │   ├── AbiMismatch
    │   ├── MissingExport
    │   └── InvalidModule
    ├── InvocationError          one invocation failed; `kind` names it in logs, metrics and REPORT
    │   ├── CpuBudgetExhausted       fuel
    │   ├── WallClockTimeout         timeout_ms
    │   ├── MemoryLimitExceeded      memory_mb
    │   ├── EphemeralStorageLimitExceeded   ephemeral_storage_mb: a write past /tmp's cap, then the guest failed
    │   ├── GuestTrap                a trap, with code and wasm backtrace
    │   ├── InvalidResult            an unusable result document
    │   ├── FunctionError            the guest reported an error on purpose
    │   ├── FunctionInitError        the function's code failed to load at instance start (`edgefn dev`)
    │   ├── Throttled                over a concurrency limit
    │   ├── FunctionPending          its code is still building (Lambda's Pending state)
    │   ├── RuleViolation            a Lambda@Edge rule broken by a result
    │   └── UnknownFunction          a reference the registry does not hold
    ├── ConcurrencyConfigError   reservations that leave too little unreserved
    ├── RegistryError            a control-plane request that cannot be done (`code`, `status`: Lambda's)
    │   ├── NotFound
    │   ├── Conflict
    │   ├── RegistryLost             the database came back empty
    │   ├── PayloadTooLarge
    │   └── InvalidPayload
    ├── StorageError             the control database (or the key-value store) cannot be opened or used
    ├── SecretsKeyError          the key secrets are encrypted with is missing, malformed or not theirs
    ├── ExpressionError          a rate()/cron() expression that does not parse
    ├── AdminTokenRequired       a tokenless admin API on a non-loopback address
    ├── ListenError              an address of the server cannot be bound (checked before any build)
    │   └── AdminListenError         the admin address
    ├── EventFileError           `edgefn invoke --event FILE` cannot be read or is not an event
    ├── LogQueryError            `edgefn logs` asked for something it cannot show
    ├── BenchError               `edgefn bench` cannot measure: a server that does not start, no load generator
    └── MetricsError             a metric used inconsistently (a programming error)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, TypeVar

if TYPE_CHECKING:
    from .report import InvocationReport

__all__ = [
    "error_document", "status_by_class",
    "AbiMismatch", "AdminListenError", "AdminTokenRequired", "BenchError", "BuildError", "ComponentImportNotAllowed",
    "ConcurrencyConfigError", "Conflict", "CpuBudgetExhausted", "Diagnostic", "EdgefnError", "EphemeralStorageLimitExceeded", "EventFileError", "ExpressionError",
    "FunctionError", "FunctionInitError", "FunctionPending", "GuestTrap", "ImportNotAllowed", "InvalidModule", "InvalidPayload", "InvalidResult",
    "InvocationError", "LayerError", "ListenError", "LogQueryError", "ManifestError", "MemoryLimitExceeded", "MetricsError", "MissingExport",
    "ModuleRejected", "NotFound", "PayloadTooLarge", "RegistryError", "RegistryLost", "RuleViolation",
    "ScaffoldError", "SecretsKeyError", "StorageError", "Throttled", "UnknownFunction", "WallClockTimeout",
]


class EdgefnError(Exception):
    """Base class of every error edgefn raises on purpose."""


# --- load time: the module is refused before any instance exists -----------------------------------


class ModuleRejected(EdgefnError):
    """A wasm module cannot be used as an edgefn function."""

    def __init__(self, function: str, reason: str) -> None:
        self.function = function
        self.reason = reason
        super().__init__(f"function {function!r}: {reason}")


class ImportNotAllowed(ModuleRejected):
    """The guest imports something that ABI v1 does not grant (each such import is named, first one in
    `module` / `name`)."""

    def __init__(self, function: str, module: str, name: str, more: tuple[str, ...] = ()) -> None:
        self.module = module
        self.name = name
        self.refused = (f"{module}.{name}", *more)
        listed = ", ".join(self.refused)
        super().__init__(
            function,
            f"imports {listed}, which {'is' if len(self.refused) == 1 else 'are'} not granted; a guest may import only "
            f"edgefn:host/v1 (log, env_get, fetch, fetch_result, kv, kv_result) and wasi_snapshot_preview1",
        )


class AbiMismatch(ModuleRejected):
    """The guest was built for another ABI version."""

    def __init__(self, function: str, guest_versions: list[int], host_version: int) -> None:
        self.guest_versions = guest_versions
        self.host_version = host_version
        built = ", ".join(f"v{v}" for v in guest_versions)
        super().__init__(
            function,
            f"built for guest ABI {built}, this host speaks v{host_version}; "
            f"rebuild it with the matching guest SDK",
        )


class MissingExport(ModuleRejected):
    """A required export is absent or has the wrong type."""

    def __init__(self, function: str, export: str, expected: str) -> None:
        self.export = export
        self.expected = expected
        super().__init__(function, f"must export {export!r} as {expected} (see guest-sdk/ABI.md)")


class InvalidModule(ModuleRejected):
    """The bytes are not a valid wasm module."""


# --- invocation time --------------------------------------------------------------------------------


class InvocationError(EdgefnError):
    """One invocation of a function failed. The instance is discarded; the runtime keeps serving."""

    #: short machine-readable name used in logs, metrics and the REPORT line
    kind = "error"
    #: the REPORT of the failed invocation, set by the invoker (None if it failed before running)
    report: "InvocationReport | None" = None

    def __init__(self, function: str, request_id: str, detail: str) -> None:
        self.function = function
        self.request_id = request_id
        self.detail = detail
        super().__init__(f"{self.kind}: function {function!r}, request {request_id}: {detail}")

    @property
    def error_type(self) -> str:
        """Lambda's `errorType` for this failure: the exception's class name (a guest's own for FunctionError)."""
        return type(self).__name__

    @property
    def error_message(self) -> str:
        return str(self)

    @property
    def handled(self) -> bool:
        """Lambda's X-Amz-Function-Error: Handled (the guest reported it) or Unhandled (the runtime ended it)."""
        return False


class CpuBudgetExhausted(InvocationError):
    kind = "cpu_budget_exhausted"

    def __init__(self, function: str, request_id: str, fuel: int) -> None:
        self.fuel = fuel
        super().__init__(function, request_id, f"used its whole CPU budget of {fuel:,} fuel (manifest key 'fuel')")


class WallClockTimeout(InvocationError):
    kind = "timeout"

    def __init__(self, function: str, request_id: str, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        super().__init__(function, request_id, f"ran past its wall-clock limit of {timeout_ms} ms (manifest key 'timeout_ms')")


class MemoryLimitExceeded(InvocationError):
    kind = "memory_limit_exceeded"

    def __init__(self, function: str, request_id: str, memory_mb: int, detail: str = "") -> None:
        self.memory_mb = memory_mb
        super().__init__(
            function, request_id, f"hit its linear-memory cap of {memory_mb} MB (manifest key 'memory_mb'){detail}"
        )


class EphemeralStorageLimitExceeded(InvocationError):
    kind = "ephemeral_storage_limit_exceeded"

    def __init__(self, function: str, request_id: str, storage_mb: int, detail: str = "") -> None:
        self.storage_mb = storage_mb
        super().__init__(function, request_id, f"filled its /tmp of {storage_mb} MB (manifest key 'ephemeral_storage_mb'){detail}")


class GuestTrap(InvocationError):
    kind = "trap"

    def __init__(self, function: str, request_id: str, trap_code: str, backtrace: list[str]) -> None:
        self.trap_code = trap_code
        self.backtrace = backtrace
        where = f" at {backtrace[0]}" if backtrace else ""
        super().__init__(function, request_id, f"trapped with code {trap_code}{where}")


class InvalidResult(InvocationError):
    kind = "invalid_result"

    def __init__(self, function: str, request_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(function, request_id, f"returned an invalid result: {reason}")


class FunctionError(InvocationError):
    """The guest reported an error on purpose (Lambda's "Handled" function error)."""

    kind = "function_error"

    def __init__(self, function: str, request_id: str, error_type: str, error_message: str) -> None:
        self.guest_error_type = error_type
        self.guest_error_message = error_message
        super().__init__(function, request_id, f"{error_type}: {error_message}")

    @property
    def error_type(self) -> str:
        return self.guest_error_type

    @property
    def error_message(self) -> str:
        return self.guest_error_message

    @property
    def handled(self) -> bool:
        return True


class FunctionInitError(InvocationError):
    """The function's own code failed to load when an instance started: `edgefn dev` imports a Python function
    from its sources then (a production build does it at build time, where this is a BuildError). Lambda's
    init errors: `error_type` is Runtime.UserCodeSyntaxError or Runtime.ImportModuleError."""

    kind = "init_error"

    def __init__(
        self, function: str, request_id: str, error_type: str, message: str, file: str = "", line: int = 0, column: int = 0,
        missing_module: str | None = None,
    ) -> None:
        self.init_error_type = error_type
        self.init_message = message
        self.file, self.line, self.column = file, line, column
        #: the module a ModuleNotFoundError named
        self.missing_module = missing_module
        where = f" at {file}:{line}:{column}" if file else ""
        super().__init__(function, request_id, f"{error_type}: {message}{where}")

    @property
    def error_type(self) -> str:
        return self.init_error_type

    @property
    def error_message(self) -> str:
        return self.init_message


class Throttled(InvocationError):
    """Over a concurrency limit: refused at once, never queued (docs/concurrency.md)."""

    kind = "throttled"

    def __init__(self, function: str, request_id: str, limit: int, reason: str = "ConcurrentInvocationLimitExceeded") -> None:
        self.limit = limit
        #: Lambda's throttle reason: ReservedFunctionConcurrentInvocationLimitExceeded (the function's own
        #: reserved_concurrency) or ConcurrentInvocationLimitExceeded (the unreserved pool of server.max_concurrency)
        self.reason = reason
        if reason == "ReservedFunctionConcurrentInvocationLimitExceeded":
            what = f"its reserved_concurrency of {limit} in-flight invocations is in use (raise functions.{function}.reserved_concurrency, or retry later)"
        else:
            what = f"the unreserved pool of {limit} in-flight invocations is in use (raise server.max_concurrency, lower other reservations, or retry later)"
        super().__init__(function, request_id, f"{reason}: {what}")


class FunctionPending(InvocationError):
    """$LATEST of the function is still being built and precompiled (`serve` listens before slow builds end):
    refused at once with a Retry-After, as Lambda refuses a function in its Pending state."""

    kind = "function_pending"

    def __init__(self, function: str, request_id: str) -> None:
        super().__init__(function, request_id, "its code is still building: retry in a few seconds (GET /_edgefn/health says when every function is ready)")

    @property
    def error_type(self) -> str:
        return "ResourceNotReadyException"


class ComponentImportNotAllowed(ModuleRejected):
    """A component imports interfaces the host does not grant (each is named; the first in `module`)."""

    def __init__(self, function: str, interfaces: list[str], host_interface: str) -> None:
        self.module = interfaces[0]
        self.name = ""
        self.refused = tuple(interfaces)
        listed = ", ".join(interfaces)
        super().__init__(
            function,
            f"imports {listed}, which {'is' if len(interfaces) == 1 else 'are'} not granted; a component may import only "
            f"{host_interface} (log, env-get, fetch, kv) and WASI 0.2 (io, clocks, random, cli, filesystem, sockets)",
        )


class RuleViolation(InvocationError):
    """A function's result broke a Lambda@Edge rule for its trigger."""

    kind = "rule_violation"

    def __init__(self, function: str, request_id: str, trigger: str, field: str, rule: str) -> None:
        self.trigger = trigger
        self.field = field
        self.rule = rule
        super().__init__(function, request_id, f"{trigger} result broke a rule at {field}: {rule}")


class UnknownFunction(InvocationError):
    """A reference names no function, version or alias in the registry."""

    kind = "function_not_found"

    def __init__(self, ref: str, request_id: str, reason: str) -> None:
        self.ref = ref
        super().__init__(ref, request_id, reason)


# --- configuration and building -------------------------------------------------------------------


class ManifestError(EdgefnError):
    """A manifest problem, with the file, the key path, the bad value and the fix."""

    def __init__(self, file: Path | str, key: str, problem: str, fix: str = "") -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem + (f"\n  fix: {fix}" if fix else ""))


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    column: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.kind}: {self.message}"


class BuildError(EdgefnError):
    """The compiler refused a source; `diagnostics` carry file:line for each error."""

    def __init__(self, source: Path, diagnostics: list[Diagnostic], output: str) -> None:
        self.source = source
        self.diagnostics = diagnostics
        self.output = output
        errors = [d for d in diagnostics if d.kind == "error"] or diagnostics
        summary = "\n".join(f"  {d}" for d in errors[:20]) or "  " + output.strip()[-2000:]
        super().__init__(f"build of {source} failed:\n{summary}")


class LayerError(EdgefnError):
    """A layer cannot be packaged, fetched or used; the message says which and what to do."""


class ScaffoldError(EdgefnError):
    """`edgefn init` cannot write the project (the directory is not empty, a bad trigger name)."""


class ConcurrencyConfigError(EdgefnError):
    """Reservations that leave too little for the functions without one."""


class ExpressionError(EdgefnError):
    """A rate() or cron() expression that does not parse: `problem` says what is wrong, `fix` what is allowed."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})")


# --- the control plane ------------------------------------------------------------------------------


class RegistryError(EdgefnError):
    """A control-plane request that cannot be done; `code` is the Lambda-style error name for the API."""

    code = "InvalidParameterValueException"
    status = 400


class NotFound(RegistryError):
    code = "ResourceNotFoundException"
    status = 404


class Conflict(RegistryError):
    code = "ResourceConflictException"
    status = 409


class RegistryLost(RegistryError):
    """The control database is empty (or was replaced) although it held published versions or aliases."""


class PayloadTooLarge(RegistryError):
    code = "RequestTooLargeException"
    status = 413

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the event is {size:,} bytes; an asynchronous invocation takes at most {limit:,} bytes (send large data by reference)")


class InvalidPayload(RegistryError):
    code = "InvalidRequestContentException"
    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(f"the event is not a valid event document: {reason} (see `edgefn events sample viewer-request`)")


class StorageError(EdgefnError):
    """The control-plane database cannot be opened or used."""


class SecretsKeyError(EdgefnError):
    """The key that encrypts secrets at rest cannot be used: malformed, unreadable, or not the one they were sealed with."""


class AdminTokenRequired(EdgefnError):
    """The admin API would listen on a non-loopback address without a token (--admin-no-token)."""

    def __init__(self, host: str, token_env: str) -> None:
        self.host = host
        self.token_env = token_env
        super().__init__(
            f"admin.host = {host!r} is not a loopback address, and --admin-no-token turns the admin API's token off. "
            f"Fix: drop --admin-no-token (a token comes from ${token_env}, admin.token_env, or is generated into admin.token_file), "
            f"or set admin.host = \"127.0.0.1\", or turn the admin API off with admin.port = 0 (or --admin-port 0)"
        )


class ListenError(EdgefnError):
    """An address the server was told to listen on cannot be bound (`what`: tcp, udp for QUIC, admin)."""

    def __init__(self, what: str, host: str, port: int, exc: OSError, settings: str = "server.host / server.port, --port") -> None:
        self.host, self.port = host, port
        where = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        super().__init__(f"cannot listen on {what} {where}: {exc.strerror or exc} (see {settings})")


class AdminListenError(ListenError):
    """The admin address cannot be bound."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        super().__init__("admin", host, port, exc, "admin.host / admin.port, --admin-port")


class EventFileError(EdgefnError):
    """The event file given to `edgefn invoke --event` cannot be read, or does not hold an event."""

    def __init__(self, file: Path | str, problem: str) -> None:
        self.file = str(file)
        super().__init__(f"{self.file}: {problem}\n  fix: write the event as JSON (`edgefn events sample viewer-request` prints one), bare or as Lambda's {{\"Records\": [{{\"cf\": ...}}]}}")


# --- observability ------------------------------------------------------------------------------------


class LogQueryError(EdgefnError):
    """`edgefn logs` was asked for something it cannot show."""


class BenchError(EdgefnError):
    """`edgefn bench` cannot take a measurement: what failed, and the log or the install that would fix it."""


class MetricsError(EdgefnError):
    """A metric defined or used inconsistently (a programming error, named so it is fixed where it happens)."""


# --- the one errorType vocabulary, and class -> answer tables ---------------------------------------------


def error_document(exc: InvocationError) -> dict[str, str]:
    """Lambda's function-error document: {"errorType", "errorMessage"} (admin API, async records, the CLI)."""
    return {"errorType": exc.error_type, "errorMessage": exc.error_message}


_T = TypeVar("_T")


def status_by_class(table: Mapping[type[BaseException], _T], exc: BaseException, default: _T) -> _T:
    """The entry of `table` for the most specific class of `exc` (its MRO), else `default`."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default
