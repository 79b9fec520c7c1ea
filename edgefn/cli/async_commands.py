"""What `edgefn invoke --async` and `edgefn dlq list|replay` do: they work on the control database directly.

No server is needed to queue or replay: the event is committed to the queue, and a running `edgefn serve`
sharing the database delivers it (until one runs, it stays queued).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import TextIO

from ..control.catalog import FunctionCatalog
from ..control.deploy import control_store_of
from ..core.exceptions import RegistryError, UnknownFunction
from ..core.ports import EventQueue
from ..core.records import DeadLetter
from ..manifest.load import load_manifest
from .app_commands import read_event


def _open_queue(config: Path) -> tuple[EventQueue, FunctionCatalog, str]:
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    return store.queue, FunctionCatalog.from_snapshot(store.registry.snapshot()), store.registry.location


def invoke_async(config: Path, ref: str, event_file: Path | None, invocation_id: str | None, stdout: TextIO) -> int:
    """Queue one event for `ref`; prints its request id (the first one's, for a repeated invocation id)."""
    payload, _ = read_event(event_file)  # a broken file is named here, not as a queue error
    queue, catalog, db_path = _open_queue(config)
    problem = catalog.check(ref)
    if problem is not None:
        raise UnknownFunction(ref, "", problem)  # the problem says what to run (edgefn deploy, publish, alias set)
    request_id, duplicate = queue.submit(ref, payload, invocation_id=invocation_id, source="cli")
    print(request_id, file=stdout)
    if duplicate:
        print(f"edgefn: invocation id {invocation_id!r} was already submitted as request {request_id}; nothing new was queued", file=sys.stderr)
    else:
        print(f"edgefn: queued in {db_path}; a running `edgefn serve` on this manifest delivers it (without one it stays queued)", file=sys.stderr)
    return 0


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _letter_doc(letter: DeadLetter) -> dict[str, object]:
    return {"id": letter.id, "function": letter.function, "kind": letter.kind, "target": letter.target, "reason": letter.reason,
            "createdAt": letter.created_at, "record": letter.record}


def dlq_list(config: Path, function: str | None, as_json: bool, stdout: TextIO) -> int:
    queue, _, _ = _open_queue(config)
    letters = queue.dead_letters(function)
    if as_json:
        print(json.dumps([_letter_doc(x) for x in letters], indent=2), file=stdout)
        return 0
    if not letters:
        print("no dead letters" + (f" for {function}" if function else ""), file=stdout)
        return 0
    print(f"{'ID':36}  {'FUNCTION':20} {'FAILED AT (UTC)':19}  {'INVOKES':>7}  REASON", file=stdout)
    for x in letters:
        invokes = x.record.get("requestContext", {}).get("approximateInvokeCount", "")
        reason = x.reason if x.kind == "invoke" else f"{x.reason} (a record for {x.target})"
        print(f"{x.id:36}  {x.function:20} {_when(x.created_at):19}  {invokes:>7}  {reason}", file=stdout)
    print(f"{len(letters)} dead letter(s); `edgefn dlq list --json` shows each record, `edgefn dlq replay ID|--all` queues them again", file=stdout)
    return 0


def dlq_replay(config: Path, args: list[str], replay_all: bool, stdout: TextIO) -> int:
    """`replay ID [NAME]` or `replay --all [NAME]`: queue dead letters again (each removed in the same transaction)."""
    if replay_all and len(args) <= 1:
        ids, function = None, (args[0] if args else None)
    elif not replay_all and 1 <= len(args) <= 2:
        ids, function = [args[0]], (args[1] if len(args) == 2 else None)
    else:
        raise RegistryError("usage: edgefn dlq replay ID [NAME]  or  edgefn dlq replay --all [NAME]")
    queue, _, _ = _open_queue(config)
    replayed = queue.replay(ids, function)
    for dead_id, new_id in replayed:
        print(f"replayed {dead_id} as request {new_id}", file=stdout)
    print(f"{len(replayed)} dead letter(s) queued again; a running `edgefn serve` delivers them", file=stdout)
    return 0
