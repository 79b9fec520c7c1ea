"""Floor 4: `edgefn dev`: hot reload, the terminal console, the event recorder, `edgefn init` scaffolds."""

__all__ = ['console', 'recorder', 'reloader', 'scaffold']
