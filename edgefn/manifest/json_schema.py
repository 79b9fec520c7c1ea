"""`edgefn schema`: a JSON Schema (draft 2020-12) of edgefn.toml, generated from the tables in schema.py.

Editors validate and complete the manifest with it (taplo / Even Better TOML, VS Code, IntelliJ). Every key,
type, default and description comes from the data classes and their checks, so the schema cannot drift
from what `load_manifest` accepts; what only the loader can check (references between tables, a source's
suffix) is said in the descriptions.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .schema import FUNCTION_NAME, REQUIRED, Manifest

__all__ = ["manifest_schema"]

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # TOML has no null: an optional key is just left out
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type(inner, defs)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder while its own fields are walked
            defs[name] = _table(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    if origin is dict:
        _, value = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _type(value, defs)}
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _type(item, defs)}
    if tp is float:
        return {"type": "number"}  # TOML writes 60 for 60.0
    return {"type": _SCALARS[tp]}


def _table(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        prop = _type(hints[f.name], defs)
        check = f.metadata.get("check")
        if check is not None and hasattr(check, "json_schema"):
            extra = check.json_schema()
            if "$ref" in prop:
                prop = {"allOf": [prop], **extra}
            else:
                prop.update(extra)
        help_text = f.metadata.get("help") or ""
        if help_text:
            prop["description"] = help_text
        if f.default is REQUIRED:
            required.append(f.name)
        elif f.default is not dataclasses.MISSING and f.default is not None and "$ref" not in prop:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            if isinstance(made, (list, dict)) and "$ref" not in prop:
                prop["default"] = made
        properties[f.name] = prop
    table: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):  # a data class's generated docstring says nothing
        table["description"] = " ".join(cls.__doc__.split())
    if required:
        table["required"] = required
    return table


def manifest_schema(version: str) -> dict[str, Any]:
    """The JSON Schema of edgefn.toml as edgefn `version` (this one) reads it."""
    defs: dict[str, Any] = {}
    root = _table(Manifest, defs)
    names = {"pattern": f"^(?:{FUNCTION_NAME.pattern})$"}
    for key in ("functions", "schedules"):
        root["properties"][key]["propertyNames"] = names
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://edgefn.dev/schema/edgefn-{version}.json",
        "title": "edgefn.toml",
        "description": f"The manifest of an edgefn app (edgefn {version}): functions, behaviors, schedules, server and control-plane settings.",
        **root,
        "$defs": defs,
    }
