"""`edgefn event-sources list|enable|disable`: the app's event source mappings and their switches (docs/event-sources.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from ..control.deploy import control_store_of
from ..manifest.load import load_manifest
from ..manifest.resolve import event_source_specs

__all__ = ["event_sources_list", "event_sources_switch"]


def event_sources_list(config: Path, as_json: bool, stdout: TextIO) -> int:
    """Each mapping the control plane holds for the app, and any the manifest declares that no deploy recorded yet."""
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        states = store.event_sources.list(manifest.app.name)
    finally:
        store.close()
    known = {s.uuid for s in states}
    undeployed = [s for s in event_source_specs(manifest) if s.uuid not in known]
    if as_json:
        docs = [s.document() for s in states] + [
            {"UUID": s.uuid, "FunctionArn": f"edgefn:function:{s.function}", "EventSourceArn": s.arn, "State": "NotDeployed"} for s in undeployed
        ]
        print(json.dumps(docs, indent=2), file=stdout)
        return 0
    if not states and not undeployed:
        print("no event sources: declare them as [[event_sources]] in the manifest (docs/event-sources.md)", file=stdout)
    for st in states:
        print(f"{st.uuid}  {'enabled ' if st.enabled else 'disabled'}  {st.function:16} {st.kind:6} {st.source}  {st.target}", file=stdout)
        print(f"    batches {st.batches}, records {st.records}, failed {st.failed}, retried {st.retried}, redelivered {st.redelivered}, "
              f"sent on failure {st.sent_on_failure}; last: {st.last_result}", file=stdout)
    for sp in undeployed:
        print(f"{sp.uuid}  not deployed yet (edgefn serve or edgefn deploy records it)  {sp.function:16} {sp.arn}", file=stdout)
    return 0


def event_sources_switch(config: Path, uuid: str, enabled: bool, stdout: TextIO) -> int:
    """Turn a mapping's polling on or off on every node (within a second); UUID may be a unique prefix."""
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        st = store.event_sources.set_enabled(uuid, enabled)
    finally:
        store.close()
    print(f"{st.uuid} {'enabled' if enabled else 'disabled'}: {st.function} <- {st.kind} {st.source} {st.target}", file=stdout)
    return 0
