"""Floor 2: the authoring format, edgefn.toml (schema, load); resolve() is its only exit, to core.app."""

__all__ = ['load', 'resolve', 'schema']
