"""`edgefn logs`, `edgefn schedules list`, `edgefn admin token`: reading what a node keeps on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from ..admin.listener import read_token
from ..control.deploy import control_store_of
from ..control.schedules import Scheduler, iso_time, load_schedules
from ..core.exceptions import EdgefnError
from ..manifest.load import load_manifest
from ..manifest.resolve import admin_settings
from ..observability.logs import logs_dir_of, parse_since, print_logs


def logs_command(config: Path, function: str, since: str | None, follow: bool, out: TextIO) -> int:
    """`edgefn logs FUNCTION [--since] [--follow] [--config]`: the stream under the manifest's logs.dir."""
    manifest = load_manifest(config)
    when = parse_since(since) if since else None
    return print_logs(logs_dir_of(config, manifest.logs), function, set(manifest.functions), out, when, follow)


def schedules_list_command(config: Path, as_json: bool, stdout: TextIO) -> int:
    """`edgefn schedules list`: each schedule with the last tick fired (from the control database) and the next one."""
    manifest = load_manifest(config)
    schedules = load_schedules(manifest, config)
    rows = Scheduler(control_store_of(config, manifest).schedules, schedules).status()
    if as_json:
        docs = [
            {"name": r.name, "function": r.function, "expression": r.expression, "catch_up": r.catch_up, "enabled": r.enabled,
             "last_tick": r.last_tick and iso_time(r.last_tick), "next_tick": r.next_tick and iso_time(r.next_tick)}
            for r in rows
        ]
        print(json.dumps(docs, indent=2), file=stdout)
        return 0
    if not rows:
        print(f"no schedules in {config} (add [schedules.NAME] tables)", file=stdout)
    for r in rows:
        nxt = iso_time(r.next_tick) if r.next_tick else ("paused" if not r.enabled else "never")
        last = iso_time(r.last_tick) if r.last_tick else "never"
        print(f"{r.name:24} {r.expression:32} -> {r.function:20} catch_up={r.catch_up:4}  last {last}  next {nxt}", file=stdout)
    return 0


def admin_token_command(config: Path, out: "TextIO") -> int:
    """`edgefn admin token`: the token a client sends (`Authorization: Bearer ...`)."""
    config = Path(config).resolve()
    admin = admin_settings(load_manifest(config), config.parent)
    token = read_token(admin.token_env, admin.token_file)
    if token is None:
        raise EdgefnError(f"no admin token yet: ${admin.token_env} is unset and {admin.token_file} does not exist; `edgefn serve` makes it on first start")
    print(token, file=out)
    return 0
