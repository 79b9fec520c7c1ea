"""The PostgreSQL backend of the control plane (psycopg 3; the `postgres` extra), for a fleet of nodes on one database.

database.py is the engine under the shared stores (registry, queue, schedules, secrets, purges, code, nodes);
schema.py its versioned migrations; changes.py the LISTEN that wakes a node; kv.py the key-value store.
"""

from __future__ import annotations

from .database import PostgresDatabase
from .kv import PostgresKeyValueStore
from .schema import SchemaTooNew

__all__ = ["PostgresDatabase", "PostgresKeyValueStore", "SchemaTooNew"]
