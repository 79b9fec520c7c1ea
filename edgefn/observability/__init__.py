"""Floor 3: per-function log streams on disk and Prometheus metrics; implements core.ports' observers."""

__all__ = ['logs', 'metrics']
