"""The function registry: functions, their $LATEST code and configuration, immutable versions and aliases.

`core.ports.Registry` is the storage interface; `SqlRegistry` implements it on either engine (database.py).
Code is referenced by content digest: the bytes live in the module store, and for other nodes in the code
store (code.py). Every write is one transaction and bumps `revision()`, which servers follow (a poll, and on
PostgreSQL a notification) to pick up changes (an alias flip, a new behavior) without a restart. An app
document (`put_many(..., document=)`) is what a deploy says of the app beyond its functions: its behaviors (routes), and
what the manifest last deployed of each function.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ...core.exceptions import Conflict, NotFound, RegistryError, RegistryLost
from ...core.files import write_atomic
from ...core.records import LATEST, AliasRecord, CodeAndConfig, FunctionRecord, RegistrySnapshot, SealedSecret, VersionRecord
from .database import Database
from .sqlite import SqliteDatabase

ALIAS_NAME = re.compile(r"(?![0-9]+$)[A-Za-z0-9_-]{1,128}")
MAX_ALIAS_VERSIONS = 2  # as Lambda: an alias routes to at most two versions


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    config TEXT NOT NULL,
    reserved_concurrency INTEGER,
    revision_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    function TEXT NOT NULL REFERENCES functions(name),
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    config TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (function, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    function TEXT NOT NULL REFERENCES functions(name),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    extra_version INTEGER,
    extra_weight REAL NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    extra_version INTEGER,
    extra_weight REAL NOT NULL DEFAULT 0,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS provisioned (
    function TEXT NOT NULL REFERENCES functions(name),
    qualifier TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (function, qualifier)
);
CREATE TABLE IF NOT EXISTS secrets (
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    current INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (function, name, generation)
);
CREATE TABLE IF NOT EXISTS version_secrets (
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (function, version, name)
);
CREATE TABLE IF NOT EXISTS app_documents (app TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at REAL NOT NULL)
"""


def _dumps(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


class SqlRegistry:
    """The registry in the control database (database.Database).

    On SQLite, beside the database a small file (`control.db.held`) records how many versions and aliases it
    held: a database emptied, truncated or swapped for a fresh one then refuses to open, instead of starting as
    a new registry with every published version and alias silently gone. (A PostgreSQL server is operated, and
    backed up, as a server: the file of one node would not know about another's writes.)"""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.location = db.location
        db.ensure_schema("registry", SCHEMA)
        self._check_not_lost()

    @property
    def held_path(self) -> Path | None:
        if not isinstance(self.db, SqliteDatabase):
            return None
        return self.db.path.with_name(self.db.path.name + ".held")

    def _counts(self) -> dict[str, int]:
        row = self.db.query(
            "SELECT (SELECT COUNT(*) FROM functions) AS functions, (SELECT COUNT(*) FROM versions) AS versions, (SELECT COUNT(*) FROM aliases) AS aliases"
        )[0]
        return {"functions": row["functions"], "versions": row["versions"], "aliases": row["aliases"]}

    def _check_not_lost(self) -> None:
        if self.held_path is None:
            return
        try:
            held = json.loads(self.held_path.read_text())
        except FileNotFoundError:
            return
        except ValueError:
            return  # a damaged note proves nothing; the next write rewrites it
        now = self._counts()
        if (held.get("versions", 0) or held.get("aliases", 0)) and now["versions"] == 0 and now["aliases"] == 0:
            assert isinstance(self.db, SqliteDatabase)
            raise RegistryLost(
                f"the control database {self.db.path} has no versions or aliases, but it held {held.get('functions', 0)} functions, "
                f"{held.get('versions', 0)} published versions and {held.get('aliases', 0)} aliases (per {self.held_path}). "
                f"Fix: restore {self.db.path.name} from a backup; or, to start a new empty registry on purpose, delete {self.held_path}"
            )

    def _remember(self) -> None:
        """Note what the database holds now (after a publish or an alias change), atomically."""
        if self.held_path is not None:
            write_atomic(self.held_path, json.dumps(self._counts()).encode())

    # --- reads ------------------------------------------------------------------------------------

    def revision(self) -> int:
        return int(self.db.query("SELECT value FROM meta WHERE key = 'revision'")[0][0])

    def snapshot(self) -> RegistrySnapshot:
        with self.db.read() as conn:  # one read transaction: a consistent view across the tables
            revision = int(conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])
            functions = {r["name"]: _function(r) for r in conn.execute("SELECT * FROM functions")}
            versions = {(r["function"], r["version"]): _version(r) for r in conn.execute("SELECT * FROM versions")}
            aliases = {(r["function"], r["name"]): _alias(r) for r in conn.execute("SELECT * FROM aliases")}
            provisioned = {(r["function"], r["qualifier"]): r["count"] for r in conn.execute("SELECT * FROM provisioned")}
            secrets: dict[tuple[str, str], dict[str, SealedSecret]] = {}
            for r in conn.execute("SELECT *, '$LATEST' AS qualifier FROM secrets WHERE current = 1"):
                secrets.setdefault((r["function"], r["qualifier"]), {})[r["name"]] = _sealed(r)
            for r in conn.execute(
                "SELECT s.*, v.version AS qualifier FROM version_secrets v JOIN secrets s USING (function, name, generation)"
            ):
                secrets.setdefault((r["function"], str(r["qualifier"])), {})[r["name"]] = _sealed(r)
            apps = {r["app"]: json.loads(r["document"]) for r in conn.execute("SELECT app, document FROM app_documents")}
        return RegistrySnapshot(revision, functions, versions, aliases, provisioned, secrets, apps)

    def get_function(self, name: str) -> FunctionRecord:
        rows = self.db.query("SELECT * FROM functions WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"function {name!r} is not in the registry; deploy it first (edgefn deploy)")
        return _function(rows[0])

    def list_functions(self) -> list[FunctionRecord]:
        return [_function(r) for r in self.db.query("SELECT * FROM functions ORDER BY name")]

    def list_versions(self, name: str) -> list[VersionRecord]:
        self.get_function(name)
        return [_version(r) for r in self.db.query("SELECT * FROM versions WHERE function = ? ORDER BY version", (name,))]

    def get_version(self, name: str, version: int) -> VersionRecord:
        rows = self.db.query("SELECT * FROM versions WHERE function = ? AND version = ?", (name, version))
        if not rows:
            self.get_function(name)
            raise NotFound(f"function {name!r} has no version {version}; publish one first (edgefn publish {name})")
        return _version(rows[0])

    def get_alias(self, name: str, alias: str) -> AliasRecord:
        rows = self.db.query("SELECT * FROM aliases WHERE function = ? AND name = ?", (name, alias))
        if not rows:
            self.get_function(name)
            raise NotFound(f"function {name!r} has no alias {alias!r}; create it with: edgefn alias set {name}:{alias} VERSION")
        return _alias(rows[0])

    def list_aliases(self, name: str) -> list[AliasRecord]:
        self.get_function(name)
        return [_alias(r) for r in self.db.query("SELECT * FROM aliases WHERE function = ? ORDER BY name", (name,))]

    def alias_history(self, name: str, alias: str) -> list[AliasRecord]:
        """Every routing the alias has had, oldest first (the last entry is the current one)."""
        rows = self.db.query("SELECT * FROM alias_history WHERE function = ? AND name = ? ORDER BY id", (name, alias))
        return [AliasRecord(r["function"], r["name"], r["version"], r["extra_version"], r["extra_weight"], "", r["changed_at"]) for r in rows]

    def get_app(self, app: str) -> dict[str, Any] | None:
        """The document the last deploy of `app` wrote (its behaviors, what it deployed of each function), or None."""
        rows = self.db.query("SELECT document FROM app_documents WHERE app = ?", (app,))
        return json.loads(rows[0]["document"]) if rows else None

    # --- writes -------------------------------------------------------------------------------------


    def put_latest(self, name: str, code: CodeAndConfig, expected_revision_id: str | None = None) -> tuple[FunctionRecord, bool]:
        """Create or update $LATEST; returns the record and whether anything changed.

        With `expected_revision_id` (a read-modify-write), Conflict if $LATEST changed since that revision."""
        expected = {name: expected_revision_id} if expected_revision_id is not None else None
        changed = self.put_many({name: code}, expected)[name]
        return self.get_function(name), changed

    def put_many(
        self, items: dict[str, CodeAndConfig], expected_revision_ids: dict[str, str] | None = None, document: tuple[str, dict[str, Any]] | None = None,
    ) -> dict[str, bool]:
        """Update $LATEST of several functions in one transaction (one deploy is all or nothing), and with
        `document` (app, document) the app's document in the same one."""
        now = time.time()
        changed: dict[str, bool] = {}
        moved = False
        with self.db.transaction() as conn:
            if document is not None:
                text = _dumps(document[1])
                old = conn.execute("SELECT document FROM app_documents WHERE app = ?", (document[0],)).fetchone()
                if old is None or old["document"] != text:
                    conn.execute(
                        "INSERT INTO app_documents (app, document, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (app) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                        (document[0], text, now),
                    )
                    moved = True
            for name, code in items.items():
                row = conn.execute("SELECT digest, config, revision_id FROM functions WHERE name = ?", (name,)).fetchone()
                expected = (expected_revision_ids or {}).get(name)
                if expected is not None and (row is None or row["revision_id"] != expected):
                    raise Conflict(f"$LATEST of {name!r} changed since revision {expected}; read it again and retry")
                config = _dumps(code.config)
                if row is not None and row["digest"] == code.digest and row["config"] == config:
                    changed[name] = False
                    continue
                if row is None:
                    conn.execute(
                        "INSERT INTO functions (name, digest, config, reserved_concurrency, revision_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (name, code.digest, config, code.config.get("reserved_concurrency"), str(uuid.uuid4()), now, now),
                    )
                else:
                    # the manifest's reserved_concurrency applies when set; else what `edgefn concurrency` set stays
                    conn.execute(
                        "UPDATE functions SET digest = ?, config = ?, reserved_concurrency = COALESCE(?, reserved_concurrency), revision_id = ?, updated_at = ? WHERE name = ?",
                        (code.digest, config, code.config.get("reserved_concurrency"), str(uuid.uuid4()), now, name),
                    )
                changed[name] = True
            if moved or any(changed.values()):
                _bump(conn)
        return changed

    def publish(self, name: str, description: str = "", expected_revision_id: str | None = None) -> tuple[VersionRecord, bool]:
        """Freeze $LATEST into the next version; if it equals the newest version, that one is returned (False)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM functions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"function {name!r} is not in the registry; deploy it first (edgefn deploy)")
            if expected_revision_id is not None and row["revision_id"] != expected_revision_id:
                raise Conflict(f"$LATEST of {name!r} changed since revision {expected_revision_id} (now {row['revision_id']}); read it again and retry")
            last = conn.execute("SELECT * FROM versions WHERE function = ? ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            refs = {(r["name"], r["generation"]) for r in conn.execute("SELECT name, generation FROM secrets WHERE function = ? AND current = 1", (name,))}
            if last is not None and last["digest"] == row["digest"] and last["config"] == row["config"] and refs == {
                (r["name"], r["generation"]) for r in conn.execute("SELECT name, generation FROM version_secrets WHERE function = ? AND version = ?", (name, last["version"]))
            }:
                return _version(last), False  # as Lambda: nothing changed since the last version, no new one
            number = (last["version"] if last is not None else 0) + 1
            conn.execute(
                "INSERT INTO versions (function, version, digest, config, description, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, number, row["digest"], row["config"], description, time.time()),
            )
            # the version reads the secrets' current generations from now on, whatever later puts do ($LATEST moves on)
            conn.executemany(
                "INSERT INTO version_secrets (function, version, name, generation) VALUES (?, ?, ?, ?)", [(name, number, n, g) for n, g in sorted(refs)]
            )
            _bump(conn)
            created = conn.execute("SELECT * FROM versions WHERE function = ? AND version = ?", (name, number)).fetchone()
        self._remember()
        return _version(created), True

    def set_alias(self, alias: AliasRecord) -> AliasRecord:
        """Create or change an alias; its versions must exist, and a canary needs 0 < weight < 1."""
        if not ALIAS_NAME.fullmatch(alias.name) or alias.name == LATEST:
            raise RegistryError(f"alias name {alias.name!r}: use 1-128 letters, digits, '-' or '_', not all digits")
        if alias.extra_version is not None:
            if alias.extra_version == alias.version:
                raise RegistryError(f"alias {alias.name!r}: the additional version must differ from version {alias.version}")
            if not 0.0 < alias.extra_weight < 1.0:
                raise RegistryError(f"alias {alias.name!r}: the weight of version {alias.extra_version} must be between 0 and 1 (got {alias.extra_weight})")
        now = time.time()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM functions WHERE name = ?", (alias.function,)).fetchone() is None:
                raise NotFound(f"function {alias.function!r} is not in the registry; deploy it first (edgefn deploy)")
            for v in (alias.version, alias.extra_version):
                if v is not None and conn.execute("SELECT 1 FROM versions WHERE function = ? AND version = ?", (alias.function, v)).fetchone() is None:
                    raise NotFound(f"function {alias.function!r} has no version {v}; an alias points to published versions (edgefn publish {alias.function})")
            weight = alias.extra_weight if alias.extra_version is not None else 0.0
            conn.execute(
                "INSERT INTO aliases (function, name, version, extra_version, extra_weight, description, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (function, name) DO UPDATE SET version = excluded.version, extra_version = excluded.extra_version, "
                "extra_weight = excluded.extra_weight, description = excluded.description, updated_at = excluded.updated_at",
                (alias.function, alias.name, alias.version, alias.extra_version, weight, alias.description, now),
            )
            conn.execute(
                "INSERT INTO alias_history (function, name, version, extra_version, extra_weight, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (alias.function, alias.name, alias.version, alias.extra_version, weight, now),
            )
            _bump(conn)
        self._remember()
        return self.get_alias(alias.function, alias.name)

    def delete_alias(self, name: str, alias: str) -> None:
        with self.db.transaction() as conn:
            if conn.execute("DELETE FROM aliases WHERE function = ? AND name = ?", (name, alias)).rowcount == 0:
                raise NotFound(f"function {name!r} has no alias {alias!r}")
            conn.execute("DELETE FROM provisioned WHERE function = ? AND qualifier = ?", (name, alias))
            # a re-created alias starts a new history: rollback must not return to the deleted alias's routings
            conn.execute("DELETE FROM alias_history WHERE function = ? AND name = ?", (name, alias))
            _bump(conn)
        self._remember()

    def set_reserved_concurrency(self, name: str, reserved: int | None) -> None:
        if reserved is not None and reserved < 0:
            raise RegistryError(f"reserved concurrency must be 0 or more, or None to remove it (got {reserved})")
        with self.db.transaction() as conn:
            if conn.execute("UPDATE functions SET reserved_concurrency = ? WHERE name = ?", (reserved, name)).rowcount == 0:
                raise NotFound(f"function {name!r} is not in the registry; deploy it first (edgefn deploy)")
            _bump(conn)

    def set_provisioned_concurrency(self, name: str, qualifier: str, count: int) -> None:
        """Keep `count` instances of a version or alias initialised (0 removes the setting); not on $LATEST, as Lambda."""
        if qualifier == LATEST:
            raise RegistryError("provisioned concurrency applies to a published version or an alias, not $LATEST")
        if count < 0:
            raise RegistryError(f"provisioned concurrency must be 0 or more (got {count})")
        if qualifier.isdigit():
            self.get_version(name, int(qualifier))
        else:
            self.get_alias(name, qualifier)
        with self.db.transaction() as conn:
            if count == 0:
                conn.execute("DELETE FROM provisioned WHERE function = ? AND qualifier = ?", (name, qualifier))
            else:
                conn.execute(
                    "INSERT INTO provisioned (function, qualifier, count) VALUES (?, ?, ?) ON CONFLICT (function, qualifier) DO UPDATE SET count = excluded.count",
                    (name, qualifier, count),
                )
            _bump(conn)


def _bump(conn: Any) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")


def _function(r: Any) -> FunctionRecord:
    return FunctionRecord(r["name"], CodeAndConfig(r["digest"], json.loads(r["config"])), r["reserved_concurrency"], r["revision_id"], r["created_at"], r["updated_at"])


def _sealed(r: Any) -> SealedSecret:
    return SealedSecret(r["function"], r["name"], r["generation"], bytes(r["nonce"]), bytes(r["ciphertext"]))


def _version(r: Any) -> VersionRecord:
    return VersionRecord(r["function"], r["version"], CodeAndConfig(r["digest"], json.loads(r["config"])), r["description"], r["created_at"])


def _alias(r: Any) -> AliasRecord:
    return AliasRecord(r["function"], r["name"], r["version"], r["extra_version"], r["extra_weight"], r["description"], r["updated_at"])
