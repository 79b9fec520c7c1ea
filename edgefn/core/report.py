"""What one invocation cost, and Lambda's REPORT line for it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InvocationReport"]


@dataclass
class InvocationReport:
    """What one invocation cost; rendered as Lambda's REPORT line."""

    request_id: str
    function: str
    duration_ms: float
    init_duration_ms: float | None
    fuel_used: int
    peak_memory_bytes: int
    memory_mb: int
    outcome: str
    version: str = "$LATEST"
    #: True if the invocation ran on a warm (reused) instance
    warm: bool = False
    #: False after a wall-clock timeout: compiled wasm keeps its fuel count in a register and writes it back
    #: only at calls, so an epoch interrupt inside a loop loses what it used since (fuel_used is a lower bound)
    fuel_exact: bool = True
    #: key-value operations and bytes of keys and values this invocation used; None: the function has no kv grant
    kv_ops: int | None = None
    kv_bytes: int = 0
    #: bytes a write past /tmp's cap asked for (the first refused with ENOSPC; 0: unknown, a tmpfs the kernel
    #: filled), and the cap; None: none was refused
    tmp_refused_bytes: int | None = None
    ephemeral_storage_mb: int = 512
    #: the trace the invocation belongs to (32 hex digits; core/tracing.py), None outside one (the CLI's invoke)
    trace_id: str | None = None

    @property
    def billed_duration_ms(self) -> int:
        return max(1, -(-int((self.duration_ms + (self.init_duration_ms or 0)) * 1000) // 1000))

    def line(self) -> str:
        # one f-string for the head every invocation has; the optional fields only when set
        head = (
            f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms\tBilled Duration: {self.billed_duration_ms} ms"
            f"\tMemory Size: {self.memory_mb} MB\tMax Memory Used: {-(-self.peak_memory_bytes // (1024 * 1024))} MB"
        )
        if self.init_duration_ms is not None:
            head += f"\tInit Duration: {self.init_duration_ms:.2f} ms"
        head += f"\tFuel Used: {self.fuel_used}" if self.fuel_exact else f"\tFuel Used: >={self.fuel_used} (timed out)"
        if self.kv_ops is not None:
            head += f"\tKV Ops: {self.kv_ops}\tKV Bytes: {self.kv_bytes}"
        if self.tmp_refused_bytes is not None:
            refused = f"{self.tmp_refused_bytes} bytes refused past" if self.tmp_refused_bytes else "a write refused: full,"
            head += f"\tStorage Error: EphemeralStorageLimitExceeded ({refused} /tmp's {self.ephemeral_storage_mb} MB)"
        if self.trace_id is not None:
            head += f"\tTrace Id: {self.trace_id}"
        return f"{head}\tOutcome: {self.outcome}"  # last: log readers split it off
