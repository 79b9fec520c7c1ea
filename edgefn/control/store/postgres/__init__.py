"""The PostgreSQL backend of the control plane's stores (psycopg 3 with a connection pool; the `postgres` extra).

Only the key-value store lives here so far (kv.py); the registry, queue and schedules join it with the fleet.
"""

from __future__ import annotations

from .kv import PostgresKeyValueStore

__all__ = ["PostgresKeyValueStore"]
