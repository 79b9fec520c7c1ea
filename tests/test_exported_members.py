"""The public face (as httpx's tests/test_exported_members.py): `edgefn.__all__` is sorted, complete and
every name in it resolves to the object its defining module has; every package declares `__all__`."""

from __future__ import annotations

import importlib
import pkgutil

import edgefn


def test_all_is_sorted_and_every_public_name_resolves():
    assert edgefn.__all__ == sorted(edgefn.__all__)
    for name in edgefn.__all__:
        value = getattr(edgefn, name)
        if name != "__version__":
            assert value.__module__.startswith("edgefn."), name
            assert getattr(importlib.import_module(value.__module__), name) is value
    public = {n for n in dir(edgefn) if not n.startswith("_") and n != "annotations"}  # `from __future__ import annotations`
    assert public <= set(edgefn.__all__) | {m.name for m in pkgutil.iter_modules(edgefn.__path__)}  # names, or subpackages once imported


def test_every_package_declares_all():
    for info in pkgutil.walk_packages(edgefn.__path__, "edgefn."):
        if info.ispkg:
            module = importlib.import_module(info.name)
            assert isinstance(getattr(module, "__all__", None), list), f"{info.name} has no __all__"
            for name in module.__all__:
                assert hasattr(module, name) or importlib.import_module(f"{info.name}.{name}"), (info.name, name)


def test_the_exception_tree_is_one_tree():
    from edgefn.core import exceptions

    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, exceptions.EdgefnError), name
            assert name in exceptions.__doc__, f"{name} is not drawn in core/exceptions.py's docstring"
