"""Layers: code many functions share, published once as an immutable version and stored by digest (docs/layers.md).

`publish` packages a directory (build/layers.py) into the control plane's layer store. `fetch` brings every
layer version a manifest's functions name from the control plane into the local cache (by digest, so a fleet's
nodes and a developer's machine see the same bytes) and records them in the app's index, where the build finds
them. A function's published version pins its layers: the layer code is inside the version's code, and its
configuration names the NAME:VERSION it was built with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..build.layers import LocalLayer, layer_dir, package_layer, record_layers, unpack_layer
from ..core.exceptions import LayerError, ManifestError, NotFound
from ..core.ports import LayerStore
from ..core.records import LayerVersion
from ..manifest.schema import Manifest

__all__ = ["fetch_layers", "fetch_manifest_layers", "publish_layer"]


def publish_layer(store: LayerStore, name: str, path: Path, description: str = "") -> LayerVersion:
    kind, data = package_layer(path.resolve())
    return store.publish(name, kind, data, description)


def fetch_layers(manifest_path: Path, manifest: Manifest, store: LayerStore, local_dir: Path) -> list[LocalLayer]:
    """Every layer the manifest's functions use, unpacked into the cache and recorded in the app's index.
    A reference that is not published is a ManifestError naming the function's key."""
    fetched: dict[str, LocalLayer] = {}
    for fn, cfg in manifest.functions.items():
        for ref in cfg.layers:
            if ref in fetched:
                continue
            name, _, version = ref.partition(":")
            try:
                v = store.get(name, int(version))
            except NotFound:
                published = ", ".join(x.ref for x in store.list(name)) or "none"
                raise ManifestError(manifest_path, f"functions.{fn}.layers", f"layer {ref} is not published (versions of {name!r}: {published})",
                                    f"publish it: edgefn layer publish {name} PATH, or name a published version") from None
            path = layer_dir(v.digest)
            if not path.is_dir():
                data = store.data(v.digest)
                if hashlib.sha256(data).hexdigest() != v.digest:
                    raise LayerError(f"layer {ref}: its content in the control plane does not match its digest {v.digest[:12]}")
                path = unpack_layer(v.kind, v.digest, data)
            fetched[ref] = LocalLayer(ref, v.kind, v.digest, path)
    if fetched:
        record_layers(local_dir, list(fetched.values()))
    return list(fetched.values())


def fetch_manifest_layers(config: Path, manifest: Manifest) -> None:
    """What every command that builds does first: fetch the layers the manifest names from its control plane."""
    if not any(cfg.layers for cfg in manifest.functions.values()):
        return
    from .deploy import control_store_of

    store = control_store_of(config, manifest)
    try:
        fetch_layers(config, manifest, store.layers, (Path(config).resolve().parent / manifest.app.registry).resolve().parent)
    finally:
        store.close()
