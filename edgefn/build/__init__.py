"""Floor 1.5, the toolchains: source -> wasm for every guest language (languages.py is the one list), importing
only core/; the manifest checks sources against it, app_build.py builds whole apps with it."""

__all__ = ['languages', 'python', 'toolchain']
