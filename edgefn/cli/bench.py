"""`edgefn bench`: its argument types, progress on the terminal, and where the results go."""

from __future__ import annotations

import argparse
import json
import logging
import re
from typing import TextIO

__all__ = ["bench_command", "concurrency_list", "duration", "header"]

#: the logger of the run's steps; a terminal shows them as the live line the build uses (cli/terminal.py)
BENCH_LOGGER = "edgefn.bench"
log = logging.getLogger(BENCH_LOGGER)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def duration(text: str) -> float:
    """--duration: 10s, 500ms, 1m or a bare number of seconds."""
    found = _DURATION.match(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 10s, 500ms, 1m)")
    value = float(found.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[found.group(2)]
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: a run lasts from 100ms to 60m")
    return value


def concurrency_list(text: str) -> tuple[int, ...]:
    """--concurrency: comma-separated connection counts, e.g. 1,16,64."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of connection counts (e.g. 1,16)") from None
    if not values or any(not 1 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each concurrency is 1..4096")
    return values


def header(text: str) -> tuple[str, str]:
    """--header: 'Name: value', sent with every HTTP request."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return name.strip(), value.strip()


def bench_command(args: argparse.Namespace, stdout: TextIO) -> int:
    from ..benchmark.report import html_page, table
    from ..benchmark.run import BenchPlan, run_bench

    plan = BenchPlan(
        args.config, tuple(args.functions), args.duration, args.concurrency, args.load_generator, in_process=not args.no_in_process, http=not args.no_http,
        headers=tuple(args.header),
    )
    started: list[str] = []

    def progress(what: str) -> None:
        # each step ends when the next starts: a live line on a terminal, one line each otherwise
        if started:
            log.debug("%s: done", started[-1], extra={"step": started[-1], "phase": "done"})
        started.append(what)
        log.info("%s …", what, extra={"step": what, "phase": "start"})

    doc = run_bench(plan, progress)
    if started:
        log.debug("%s: done", started[-1], extra={"step": started[-1], "phase": "done"})
    stdout.write(table(doc))
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json_out}", file=stdout)
    if args.html:
        args.html.write_text(html_page(doc))
        print(f"wrote {args.html}", file=stdout)
    return 0
