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

    @property
    def billed_duration_ms(self) -> int:
        return max(1, -(-int((self.duration_ms + (self.init_duration_ms or 0)) * 1000) // 1000))

    def line(self) -> str:
        parts = [
            f"REPORT RequestId: {self.request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {self.billed_duration_ms} ms",
            f"Memory Size: {self.memory_mb} MB",
            f"Max Memory Used: {-(-self.peak_memory_bytes // (1024 * 1024))} MB",
        ]
        if self.init_duration_ms is not None:
            parts.append(f"Init Duration: {self.init_duration_ms:.2f} ms")
        parts.append(f"Fuel Used: {self.fuel_used}" if self.fuel_exact else f"Fuel Used: >={self.fuel_used} (timed out)")
        parts.append(f"Outcome: {self.outcome}")
        return "\t".join(parts)
