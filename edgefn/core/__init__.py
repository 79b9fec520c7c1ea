"""Floor 1, the ground: the nouns every layer shares (events, the locked app, the report, the exception tree) and the ports through which lower floors reach up. Imports nothing from edgefn."""

__all__ = ['app', 'events', 'exceptions', 'files', 'ports', 'report']
