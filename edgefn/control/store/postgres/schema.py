"""The control plane's tables on PostgreSQL, as versioned migrations applied by edgefn itself.

`edgefn_schema` records the versions applied. The first connection of a process applies those missing, under
an advisory lock (two nodes starting at once apply each once); a database whose schema is newer than this
edgefn knows is refused with what to do. A migration is never edited once released: a change is a new one.
Every change a node follows (the registry's revision, a cache purge, a queued event) notifies channel
`edgefn_changes` from a trigger, so the stores stay free of engine-specific SQL.
"""

from __future__ import annotations

from typing import Any

from ....core.exceptions import StorageError

__all__ = ["CHANNEL", "MIGRATIONS", "SCHEMA_VERSION", "SchemaTooNew", "migrate"]

CHANNEL = "edgefn_changes"

_V1 = """
CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE functions (
    name text PRIMARY KEY, digest text NOT NULL, config text NOT NULL, reserved_concurrency integer,
    revision_id text NOT NULL, created_at double precision NOT NULL, updated_at double precision NOT NULL
);
CREATE TABLE versions (
    function text NOT NULL REFERENCES functions(name), version integer NOT NULL, digest text NOT NULL, config text NOT NULL,
    description text NOT NULL DEFAULT '', created_at double precision NOT NULL, PRIMARY KEY (function, version)
);
CREATE TABLE aliases (
    function text NOT NULL REFERENCES functions(name), name text NOT NULL, version integer NOT NULL, extra_version integer,
    extra_weight double precision NOT NULL DEFAULT 0, description text NOT NULL DEFAULT '', updated_at double precision NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE alias_history (
    id bigserial PRIMARY KEY, function text NOT NULL, name text NOT NULL, version integer NOT NULL, extra_version integer,
    extra_weight double precision NOT NULL DEFAULT 0, changed_at double precision NOT NULL
);
CREATE TABLE provisioned (
    function text NOT NULL REFERENCES functions(name), qualifier text NOT NULL, count integer NOT NULL, PRIMARY KEY (function, qualifier)
);
CREATE TABLE secrets (
    function text NOT NULL, name text NOT NULL, generation integer NOT NULL, nonce bytea NOT NULL, ciphertext bytea NOT NULL,
    current integer NOT NULL, created_at double precision NOT NULL, PRIMARY KEY (function, name, generation)
);
CREATE TABLE version_secrets (
    function text NOT NULL, version integer NOT NULL, name text NOT NULL, generation integer NOT NULL, PRIMARY KEY (function, version, name)
);
CREATE TABLE app_documents (app text PRIMARY KEY, document text NOT NULL, updated_at double precision NOT NULL);
CREATE TABLE code_blobs (digest text PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL, created_at double precision NOT NULL);
CREATE TABLE async_events (
    id text PRIMARY KEY, kind text NOT NULL, target text NOT NULL, function text NOT NULL, payload bytea NOT NULL, source text NOT NULL,
    enqueued_at double precision NOT NULL, due_at double precision NOT NULL, attempts integer NOT NULL DEFAULT 0,
    throttles integer NOT NULL DEFAULT 0, last_response text, lease_until double precision, lease_token text
);
CREATE INDEX async_events_due ON async_events (due_at);
CREATE TABLE async_invocation_ids (
    function text NOT NULL, invocation_id text NOT NULL, request_id text NOT NULL, created_at double precision NOT NULL,
    PRIMARY KEY (function, invocation_id)
);
CREATE INDEX async_invocation_ids_age ON async_invocation_ids (created_at);
CREATE TABLE async_dead_letters (
    id text PRIMARY KEY, kind text NOT NULL, target text NOT NULL, function text NOT NULL, payload bytea NOT NULL, record text NOT NULL,
    reason text NOT NULL, created_at double precision NOT NULL
);
CREATE TABLE schedule_state (
    schedule text PRIMARY KEY, expression text NOT NULL, enabled integer NOT NULL, anchor bigint NOT NULL,
    checked_through double precision NOT NULL, last_tick bigint
);
CREATE TABLE schedule_ticks (
    schedule text NOT NULL, tick bigint NOT NULL, invocation_id text NOT NULL, fired_at double precision NOT NULL, PRIMARY KEY (schedule, tick)
);
CREATE TABLE cache_purges (id bigserial PRIMARY KEY, kind text NOT NULL, value text NOT NULL, created_at double precision NOT NULL);
CREATE TABLE nodes (
    id text PRIMARY KEY, app text NOT NULL, address text NOT NULL, hostname text NOT NULL, pid integer NOT NULL, revision bigint NOT NULL,
    versions text NOT NULL, started_at double precision NOT NULL, last_seen double precision NOT NULL
);
CREATE FUNCTION edgefn_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('edgefn_changes', current_schema() || ' ' || TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE TRIGGER meta_changed AFTER UPDATE ON meta FOR EACH STATEMENT EXECUTE FUNCTION edgefn_notify('registry');
CREATE TRIGGER purge_added AFTER INSERT ON cache_purges FOR EACH STATEMENT EXECUTE FUNCTION edgefn_notify('purges');
CREATE TRIGGER event_queued AFTER INSERT OR UPDATE OF due_at ON async_events FOR EACH STATEMENT EXECUTE FUNCTION edgefn_notify('queue')
"""

_V2 = """
CREATE TABLE event_source_mappings (
    uuid text PRIMARY KEY, app text NOT NULL, function text NOT NULL, kind text NOT NULL, source text NOT NULL, target text NOT NULL,
    batch_size integer NOT NULL, maximum_concurrency integer NOT NULL, enabled integer NOT NULL, manifest_enabled integer NOT NULL,
    last_result text NOT NULL DEFAULT 'No records processed', last_processed double precision, updated_at double precision NOT NULL,
    batches bigint NOT NULL DEFAULT 0, records bigint NOT NULL DEFAULT 0, failed bigint NOT NULL DEFAULT 0, retried bigint NOT NULL DEFAULT 0,
    redelivered bigint NOT NULL DEFAULT 0, sent_on_failure bigint NOT NULL DEFAULT 0
);
CREATE TABLE layer_versions (
    name text NOT NULL, version integer NOT NULL, kind text NOT NULL, digest text NOT NULL, size bigint NOT NULL,
    description text NOT NULL DEFAULT '', created_at double precision NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE layer_blobs (digest text PRIMARY KEY, data bytea NOT NULL)
"""

#: version -> the statements that bring the schema from the version before to it
MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2}
SCHEMA_VERSION = max(MIGRATIONS)


class SchemaTooNew(StorageError):
    """The control database was migrated by a newer edgefn than this one."""


def migrate(conn: Any, location: str) -> None:
    """Bring the database `conn` is on to SCHEMA_VERSION (autocommit connection; one transaction)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ' edgefn schema'))")
        conn.execute("CREATE TABLE IF NOT EXISTS edgefn_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM edgefn_schema").fetchone()
        current = int(row[0])
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the control database {location} has schema version {current}, newer than this edgefn knows ({SCHEMA_VERSION}). "
                "Fix: upgrade edgefn on this node to the version the rest of the fleet runs"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version])
            conn.execute("INSERT INTO edgefn_schema (version) VALUES (%s)", (version,))
