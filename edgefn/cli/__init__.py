"""The `edgefn` command: argument parsing (main.py) and one module per command group; no domain code."""

from .main import main

__all__ = ["main"]
