"""Typed failures of loading and invoking a guest.

Every error carries what an operator needs to act on it: the function, the request id (for invocation
errors) and the limit or rule involved. The pipeline maps each class to an HTTP status; see docs/errors.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sandbox import InvocationReport


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
    """The guest imports something that ABI v1 does not grant."""

    def __init__(self, function: str, module: str, name: str) -> None:
        self.module = module
        self.name = name
        super().__init__(
            function,
            f"imports {module}.{name}, which is not granted; a guest may import only "
            f"edgefn:host/v1 (log, env_get, fetch, fetch_result) and wasi_snapshot_preview1",
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
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(function, request_id, f"{error_type}: {error_message}")


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
