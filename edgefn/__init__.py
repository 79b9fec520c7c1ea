"""edgefn: WebAssembly-sandboxed edge functions with the Lambda@Edge event model.

The public face, for embedding edgefn in a program of one's own:

    import edgefn

    app = edgefn.load_manifest(Path("edgefn.toml"))        # the authoring form, checked
    with edgefn.Runtime(Path(".edgefn/modules")) as rt:     # engines, module store, invoker
        ...rt.invoker.invoke_sync(spec, event)               # one invocation -> result + REPORT

Names load on first use (a CLI command that needs no wasm engine does not pay for one).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .core.app import CachePolicy, FunctionSpec, Limits, ResolvedApp
    from .core.events import Body, EdgeRequest, EdgeResponse, Event, EventConfig
    from .core.exceptions import (
        EdgefnError,
        InvocationError,
        ManifestError,
        ModuleRejected,
    )
    from .core.report import InvocationReport
    from .manifest.load import load_manifest
    from .node import create_app
    from .runtime.invoker import Invocation, Runtime

__version__ = "0.1.0"

#: name -> the module that defines it
_HOME = {
    "Body": "edgefn.core.events",
    "CachePolicy": "edgefn.core.app",
    "EdgeRequest": "edgefn.core.events",
    "EdgeResponse": "edgefn.core.events",
    "EdgefnError": "edgefn.core.exceptions",
    "Event": "edgefn.core.events",
    "EventConfig": "edgefn.core.events",
    "FunctionSpec": "edgefn.core.app",
    "Invocation": "edgefn.runtime.invoker",
    "InvocationError": "edgefn.core.exceptions",
    "InvocationReport": "edgefn.core.report",
    "Limits": "edgefn.core.app",
    "ManifestError": "edgefn.core.exceptions",
    "ModuleRejected": "edgefn.core.exceptions",
    "ResolvedApp": "edgefn.core.app",
    "Runtime": "edgefn.runtime.invoker",
    "create_app": "edgefn.node",
    "load_manifest": "edgefn.manifest.load",
}

__all__ = [
    "Body",
    "CachePolicy",
    "EdgeRequest",
    "EdgeResponse",
    "EdgefnError",
    "Event",
    "EventConfig",
    "FunctionSpec",
    "Invocation",
    "InvocationError",
    "InvocationReport",
    "Limits",
    "ManifestError",
    "ModuleRejected",
    "ResolvedApp",
    "Runtime",
    "__version__",
    "create_app",
    "load_manifest",
]


def __getattr__(name: str) -> _typing.Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'edgefn' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
