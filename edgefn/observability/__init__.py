"""Observability of a server process: per-function log streams on disk (logs) and Prometheus metrics (metrics)."""
