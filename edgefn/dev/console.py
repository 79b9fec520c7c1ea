"""The `edgefn dev` terminal: one line per request, colored on a TTY and plain otherwise."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..core.app import ResolvedApp
from ..edge.pipeline import PipelineResult

_COLORS = {"green": "32", "yellow": "33", "red": "31", "cyan": "36", "dim": "2", "bold": "1"}

#: `--color`: auto (a terminal, unless $NO_COLOR is set: no-color.org), always, never; the CLI passes it on
#: to the server processes it starts in $EDGEFN_COLOR
COLOR_CHOICES = ("auto", "always", "never")
COLOR_ENV = "EDGEFN_COLOR"


def use_color(stream: TextIO) -> bool:
    choice = os.environ.get(COLOR_ENV, "auto")
    if choice in ("always", "never"):
        return choice == "always"
    return not os.environ.get("NO_COLOR") and stream.isatty()


class DevConsole:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.color = use_color(self.stream)

    def _paint(self, text: str, color: str) -> str:
        return f"\033[{_COLORS[color]}m{text}\033[0m" if self.color else text

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        self._write(self._paint("edgefn", "cyan") + f" {message}")

    def error(self, message: str) -> None:
        self._write(self._paint("edgefn error", "red") + f" {message}")

    def ready(self, app: ResolvedApp) -> None:
        """The start-up summary: what is served, and how to reload and stop."""
        names = ", ".join(sorted(app.functions))
        behaviors = len(app.behaviors)
        self._write(
            self._paint("edgefn dev", "cyan") + f" {self._paint(app.name, 'bold')}: {len(app.functions)} functions ({names}), "
            f"{behaviors} behavior{'s' if behaviors != 1 else ''}; watching {app.root}: save a source or edgefn.toml to reload, Ctrl-C to stop"
        )

    def request(self, method: str, path: str, result: PipelineResult, total_ms: float) -> None:
        status = result.response.status
        color = "green" if status < 400 else "yellow" if status < 500 else "red"
        hooks = " ".join(f"{stage}={ms:.1f}ms" for stage, ms in result.timings)
        costs = " ".join(
            f"{r.function}:fuel={r.fuel_used} mem={-(-r.peak_memory_bytes // 1024)}KiB" + ("" if r.outcome == "ok" else f" {r.outcome}")
            for r in result.reports
        )
        line = f"{method:6} {path} {self._paint(str(status), color)} {result.cache_status.value} {total_ms:.1f}ms"
        self._write(" ".join(part for part in (line, self._paint(hooks, "dim"), costs) if part))
