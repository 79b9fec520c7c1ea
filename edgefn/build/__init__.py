"""Floor 3: source -> wasm (C/Zig through zig cc, Python through componentize-py) -> module store -> resolved app."""

__all__ = ['app', 'python', 'toolchain']
