"""`edgefn logs`, `edgefn schedules list`, `edgefn admin token`: reading what a node keeps on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from ..admin.listener import read_token, token_path
from ..control.deploy import registry_path
from ..control.schedules import Scheduler, iso_time, load_schedules
from ..control.store.queue import SqliteEventQueue
from ..control.store.sqlite import Database
from ..core.exceptions import EdgefnError
from ..manifest.load import load_manifest
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
    db = Database(registry_path(config, manifest))
    rows = Scheduler(db, schedules, SqliteEventQueue(db)).status()
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
    admin = load_manifest(config).admin
    token = read_token(admin.token_env, token_path(admin, config.parent))
    if token is None:
        raise EdgefnError(f"no admin token yet: ${admin.token_env} is unset and {token_path(admin, config.parent)} does not exist; `edgefn serve` makes it on first start")
    print(token, file=out)
    return 0
