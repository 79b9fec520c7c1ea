"""`edgefn layer publish|list`: layers, code many functions share (docs/layers.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TextIO

from ..control.deploy import control_store_of
from ..control.layers import publish_layer
from ..control.schedules import iso_time
from ..core.exceptions import LayerError
from ..manifest.load import load_manifest

__all__ = ["layer_list", "layer_publish"]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def layer_publish(config: Path, name: str, path: Path, description: str, stdout: TextIO) -> int:
    if not _NAME.fullmatch(name):
        raise LayerError(f"bad layer name {name!r}: use lowercase letters, digits and '-', starting with a letter or digit (at most 64)")
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        v = publish_layer(store.layers, name, path, description)
    finally:
        store.close()
    print(f"published layer {v.ref} ({v.kind}, {v.size:,} bytes, sha256 {v.digest[:12]}); use it with layers = [\"{v.ref}\"]", file=stdout)
    return 0


def layer_list(config: Path, name: str | None, as_json: bool, stdout: TextIO) -> int:
    manifest = load_manifest(config)
    store = control_store_of(config, manifest)
    try:
        versions = store.layers.list(name)
    finally:
        store.close()
    if as_json:
        docs = [{"LayerVersionArn": f"edgefn:layer:{v.name}:{v.version}", "LayerName": v.name, "Version": v.version, "Kind": v.kind, "CodeSha256": v.digest,
                 "CodeSize": v.size, "Description": v.description, "CreatedDate": iso_time(v.created_at)} for v in versions]
        print(json.dumps(docs, indent=2), file=stdout)
        return 0
    if not versions:
        print("no layers yet: edgefn layer publish NAME PATH (a directory of pure-Python packages)", file=stdout)
    for v in versions:
        print(f"{v.ref:24} {v.kind:7} {v.size:>10,} bytes  {v.digest[:12]}  {iso_time(v.created_at)}  {v.description}", file=stdout)
    return 0
