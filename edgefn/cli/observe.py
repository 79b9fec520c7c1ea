"""`edgefn logs`, `edgefn schedules list`, `edgefn nodes list`, `edgefn admin token`: reading what a node keeps."""

from __future__ import annotations

import json
import time
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


#: a node not heard from for this long is shown as lost (its heartbeat comes every second)
NODE_LOST_S = 10.0


def nodes_list_command(config: Path, as_json: bool, stdout: TextIO) -> int:
    """`edgefn nodes list`: every node of the control plane, from its last heartbeat."""
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        nodes = store.nodes.list()
    finally:
        store.close()
    now = time.time()
    states = {n.id: "lost" if now - n.last_seen > NODE_LOST_S else "serving" for n in nodes}
    if as_json:
        docs = [
            {"id": n.id, "app": n.app, "address": n.address, "hostname": n.hostname, "pid": n.pid, "revision": n.revision, "versions": list(n.versions),
             "started_at": iso_time(n.started_at), "last_seen": iso_time(n.last_seen), "seen_s_ago": round(now - n.last_seen, 1), "state": states[n.id]}
            for n in nodes
        ]
        print(json.dumps(docs, indent=2), file=stdout)
        return 0
    if not nodes:
        print(f"no nodes serve from {store.registry.location} (`edgefn serve` registers each server process)", file=stdout)
    for n in nodes:
        print(f"{n.address:22} {n.app:16} revision {n.revision:<6} {states[n.id]:8} seen {now - n.last_seen:5.1f} s ago  pid {n.pid:<7} "
              f"{', '.join(n.versions)}", file=stdout)
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
