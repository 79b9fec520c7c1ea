"""What the terminal shows: -q / --log-level / --log-format / --color, and the build's live progress line.

The options apply to this process's log lines and, through the environment (observability/logs.py,
dev/console.py), to every server process `serve` and `dev` start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import TextIO

from ..dev.console import COLOR_ENV
from ..observability.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV, JsonLinesFormatter

__all__ = ["StepProgress", "apply_output_options"]

#: the logger of build steps (app_build._step)
BUILD_LOGGER = "edgefn.build"
#: the loggers whose steps the live line shows: the build's and `edgefn bench`'s (cli/bench.py)
PROGRESS_LOGGERS = (BUILD_LOGGER, "edgefn.bench")
#: a step shows on the live line once it has run this long
SHOW_AFTER_S = 0.3
REDRAW_S = 0.1


class StepProgress(logging.Handler):
    """On a terminal: the build steps running now as one live line with their elapsed time, redrawn every
    REDRAW_S, and the build's other lines (a step's "done", a fallback) printed above it."""

    def __init__(self, stream: TextIO, level: int = logging.INFO) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.shown = level
        self._running: dict[str, float] = {}
        self._drawn = False
        self._thread = threading.Thread(target=self._tick, name="edgefn-progress", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:  # with self.lock held
        step, phase = getattr(record, "step", None), getattr(record, "phase", None)
        if step is not None and phase == "start":
            self._running[step] = time.monotonic()
            return
        if step is not None:
            self._running.pop(step, None)
        if record.levelno >= self.shown:
            self._clear()
            self.stream.write(f"edgefn: {record.getMessage()}\n")
        self._draw()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False

    def _draw(self) -> None:
        now = time.monotonic()
        long = [(name, now - since) for name, since in self._running.items() if now - since >= SHOW_AFTER_S]
        self._clear()
        if long:
            elapsed = max(s for _, s in long)
            self.stream.write(f"edgefn: {'; '.join(name for name, _ in long)} … {elapsed:.1f} s")
            self._drawn = True
        self.stream.flush()

    def _tick(self) -> None:
        while True:
            time.sleep(REDRAW_S)
            self.acquire()
            try:
                if self._running or self._drawn:
                    self._draw()
            finally:
                self.release()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a CLI run in-process by a test swaps it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def apply_output_options(args: argparse.Namespace, serving: bool, stream: TextIO | None = None) -> None:
    """Set up this process's log output from the command's options, and hand them on to server processes.
    `serving`: `serve` / `dev`, whose server logging (observability/logs.py) writes everything but the
    build's live line."""
    stream = stream or sys.stderr
    level_name = "warning" if getattr(args, "quiet", False) else getattr(args, "log_level", None)
    if level_name:
        os.environ[LOG_LEVEL_ENV] = level_name
    fmt = getattr(args, "log_format", None)
    if fmt:
        os.environ[LOG_FORMAT_ENV] = fmt
    os.environ[COLOR_ENV] = getattr(args, "color", None) or os.environ.get(COLOR_ENV, "auto")
    level = logging.getLevelName((level_name or os.environ.get(LOG_LEVEL_ENV, "info")).upper())
    json_lines = (fmt or os.environ.get(LOG_FORMAT_ENV)) == "json"
    root, steps = logging.getLogger(), [logging.getLogger(name) for name in PROGRESS_LOGGERS]
    for handler_of_before in [h for h in root.handlers if isinstance(h, _StderrHandler)]:  # one per process, however often main() runs
        root.removeHandler(handler_of_before)
    for logger in steps:
        for progress_of_before in [h for h in logger.handlers if isinstance(h, StepProgress)]:
            logger.removeHandler(progress_of_before)
        logger.propagate = True
    if not serving:
        handler = _StderrHandler()
        handler.setFormatter(JsonLinesFormatter() if json_lines else logging.Formatter("%(message)s"))
        handler.setLevel(level)
        root.addHandler(handler)
        root.setLevel(min(level, logging.INFO))
    if not json_lines and level <= logging.INFO and stream.isatty():
        progress = StepProgress(stream, level)  # one live line for all of them
        for logger in steps:
            logger.addHandler(progress)
            logger.propagate = False  # the live line prints their lines itself, above it
