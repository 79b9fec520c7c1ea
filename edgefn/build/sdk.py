"""Where the guest SDKs are: package data of an installed edgefn, or guest-sdk/ of a source checkout.

A wheel carries guest-sdk/ as `edgefn/guest_sdk/` (setup.py copies it in at build time); an editable
install and a checkout read guest-sdk/ in place. EDGEFN_SDK_DIR (C) and EDGEFN_SDK_PY_DIR (Python) override.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SDK_ROOT", "sdk_dir"]

_PACKAGED = Path(__file__).resolve().parents[1] / "guest_sdk"
_CHECKOUT = Path(__file__).resolve().parents[2] / "guest-sdk"
#: the SDKs this edgefn builds with
SDK_ROOT = _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT

_OVERRIDES = {"c": "EDGEFN_SDK_DIR", "python": "EDGEFN_SDK_PY_DIR"}


def sdk_dir(language: str) -> Path:
    """The SDK of `language` ("c", "python"): its header or package, and for Python the WIT world."""
    override = os.environ.get(_OVERRIDES.get(language, ""), "")
    return Path(override) if override else SDK_ROOT / language
