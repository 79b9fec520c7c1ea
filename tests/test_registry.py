"""The registry in-process on each engine (a real SQLite file, a real PostgreSQL schema): versions, aliases, history,
revisions, snapshots, weighted picks."""

from __future__ import annotations

import math
import random
import threading

import pytest

from edgefn.cli.control import rollback_alias
from edgefn.control.catalog import FunctionCatalog
from edgefn.control.store import open_control_store
from edgefn.control.store.registry import SqlRegistry
from edgefn.control.store.sqlite import SqliteDatabase
from edgefn.core.exceptions import (
    Conflict,
    NotFound,
    RegistryError,
    RegistryLost,
    UnknownFunction,
)
from edgefn.core.records import AliasRecord, CodeAndConfig, FunctionRef
from edgefn.manifest.resolve import config_record
from edgefn.manifest.schema import FunctionConfig

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
DIGEST_C = "c" * 64


def code(digest: str, **config: object) -> CodeAndConfig:
    return CodeAndConfig(digest, config_record(FunctionConfig(source="fn.wasm", **config)))  # type: ignore[arg-type]


@pytest.fixture
def registry(control_db) -> SqlRegistry:
    return SqlRegistry(control_db)


def with_versions(registry: SqlRegistry, *digests: str, name: str = "fn") -> None:
    """Deploy and publish each digest in turn: versions 1..len(digests)."""
    for digest in digests:
        registry.put_latest(name, code(digest))
        registry.publish(name)


def test_publish_freezes_code_and_configuration(registry):
    registry.put_latest("fn", code(DIGEST_A, env={"GREETING": "one"}, memory_mb=16))
    v1, created = registry.publish("fn", "first")
    assert created and v1.version == 1 and v1.description == "first"

    registry.put_latest("fn", code(DIGEST_B, env={"GREETING": "two"}, memory_mb=64))
    frozen = registry.get_version("fn", 1)
    assert frozen.code.digest == DIGEST_A
    assert frozen.code.config["env"] == {"GREETING": "one"} and frozen.code.config["memory_mb"] == 16

    catalog = FunctionCatalog.from_snapshot(registry.snapshot())
    one, latest = catalog.select("fn:1"), catalog.select("fn")
    assert (one.digest, one.env, one.version) == (DIGEST_A, {"GREETING": "one"}, "1")
    assert (latest.digest, latest.env, latest.version) == (DIGEST_B, {"GREETING": "two"}, "$LATEST")
    assert one.limits.memory_mb == 16 and latest.limits.memory_mb == 64


def test_publish_without_a_change_returns_the_existing_version(registry):
    registry.put_latest("fn", code(DIGEST_A))
    first, created = registry.publish("fn")
    revision = registry.revision()
    again, created_again = registry.publish("fn", "same code")
    assert created and not created_again
    assert again.version == first.version == 1
    assert registry.revision() == revision  # nothing was written
    assert [v.version for v in registry.list_versions("fn")] == [1]

    registry.put_latest("fn", code(DIGEST_A, timeout_ms=100))  # a configuration change alone is a new version
    second, created = registry.publish("fn")
    assert created and second.version == 2


def test_publish_of_an_unknown_function_says_to_deploy(registry):
    with pytest.raises(NotFound, match="edgefn deploy"):
        registry.publish("ghost")


def test_publish_with_a_stale_revision_id_conflicts(registry):
    record, _ = registry.put_latest("fn", code(DIGEST_A))
    registry.put_latest("fn", code(DIGEST_B))
    with pytest.raises(Conflict, match="changed since revision"):
        registry.publish("fn", expected_revision_id=record.revision_id)


@pytest.mark.parametrize(
    ("alias", "error", "message"),
    [
        (AliasRecord("fn", "live", 9), NotFound, "has no version 9"),
        (AliasRecord("fn", "live", 1, extra_version=9, extra_weight=0.5), NotFound, "has no version 9"),
        (AliasRecord("ghost", "live", 1), NotFound, "'ghost' is not in the registry"),
        (AliasRecord("fn", "live", 1, extra_version=2, extra_weight=0.0), RegistryError, "between 0 and 1"),
        (AliasRecord("fn", "live", 1, extra_version=2, extra_weight=1.0), RegistryError, "between 0 and 1"),
        (AliasRecord("fn", "live", 1, extra_version=2, extra_weight=1.5), RegistryError, "between 0 and 1"),
        (AliasRecord("fn", "live", 1, extra_version=2, extra_weight=-0.1), RegistryError, "between 0 and 1"),
        (AliasRecord("fn", "live", 1, extra_version=1, extra_weight=0.5), RegistryError, "must differ from version 1"),
        (AliasRecord("fn", "123", 1), RegistryError, "not all digits"),
        (AliasRecord("fn", "bad name", 1), RegistryError, "letters, digits"),
        (AliasRecord("fn", "$LATEST", 1), RegistryError, "alias name"),
        (AliasRecord("fn", "", 1), RegistryError, "alias name"),
        (AliasRecord("fn", "x" * 129, 1), RegistryError, "1-128"),
    ],
)
def test_alias_validation(registry, alias, error, message):
    with_versions(registry, DIGEST_A, DIGEST_B)
    revision = registry.revision()
    with pytest.raises(error, match=message):
        registry.set_alias(alias)
    assert registry.revision() == revision  # a refused write changes nothing
    assert registry.list_aliases("fn") == []


def test_alias_routing_and_catalog_check(registry):
    with_versions(registry, DIGEST_A, DIGEST_B)
    live = registry.set_alias(AliasRecord("fn", "live", 1, extra_version=2, extra_weight=0.1, description="canary"))
    assert live.routing() == {"1": 0.9, "2": 0.1} and live.description == "canary"
    catalog = FunctionCatalog.from_snapshot(registry.snapshot())
    assert catalog.versions_of(FunctionRef.parse("fn:live")) == ["1", "2"]
    assert catalog.check("fn:live") is None and catalog.check("fn:2") is None
    assert "edgefn alias set fn:beta VERSION" in (catalog.check("fn:beta") or "")
    assert "edgefn publish fn" in (catalog.check("fn:3") or "")
    with pytest.raises(UnknownFunction, match="not in the registry"):
        catalog.select("ghost:live")
    assert catalog.config("fn:live").source == "fn.wasm"


def test_rollback_goes_back_through_the_alias_history(registry):
    with_versions(registry, DIGEST_A, DIGEST_B, DIGEST_C)
    registry.set_alias(AliasRecord("fn", "live", 1))
    registry.set_alias(AliasRecord("fn", "live", 2, description="kept"))
    registry.set_alias(AliasRecord("fn", "live", 2, extra_version=3, extra_weight=0.1, description="kept"))

    done = rollback_alias(registry, "fn", "live")
    assert done.before.routing() == {"2": 0.9, "3": 0.1}
    assert done.after.routing() == {"2": 1.0} and done.after.description == "kept"
    assert registry.get_alias("fn", "live").routing() == {"2": 1.0}

    # a rollback is a change like any other: rolling back again undoes it
    assert rollback_alias(registry, "fn", "live").after.routing() == {"2": 0.9, "3": 0.1}
    assert [h.routing() for h in registry.alias_history("fn", "live")] == [
        {"1": 1.0}, {"2": 1.0}, {"2": 0.9, "3": 0.1}, {"2": 1.0}, {"2": 0.9, "3": 0.1},
    ]

    assert rollback_alias(registry, "fn", "live", to=1).after.routing() == {"1": 1.0}
    with pytest.raises(Conflict, match="already routes every invocation to version 1"):
        rollback_alias(registry, "fn", "live", to=1)
    with pytest.raises(NotFound, match="has no version 7"):
        rollback_alias(registry, "fn", "live", to=7)


def test_rollback_with_no_earlier_routing_says_so(registry):
    with_versions(registry, DIGEST_A, DIGEST_B)
    registry.set_alias(AliasRecord("fn", "live", 1))
    registry.set_alias(AliasRecord("fn", "live", 1))  # the same routing again is not something to go back to
    with pytest.raises(Conflict, match="no earlier routing.*--to VERSION"):
        rollback_alias(registry, "fn", "live")
    with pytest.raises(NotFound, match="no alias 'beta'"):
        rollback_alias(registry, "fn", "beta")

    registry.set_alias(AliasRecord("fn", "live", 2))
    registry.delete_alias("fn", "live")
    registry.set_alias(AliasRecord("fn", "live", 2))  # re-created: a new alias with a history of its own
    with pytest.raises(Conflict, match="no earlier routing"):
        rollback_alias(registry, "fn", "live")


def test_revision_moves_on_every_write_and_not_on_a_no_op(registry):
    seen = [registry.revision()]

    def moved() -> int:
        seen.append(registry.revision())
        return seen[-1] - seen[-2]

    changed = registry.put_many({"fn": code(DIGEST_A), "other": code(DIGEST_A)})
    assert changed == {"fn": True, "other": True} and moved() == 1  # one deploy, one revision
    assert registry.put_many({"fn": code(DIGEST_A), "other": code(DIGEST_A)}) == {"fn": False, "other": False}
    assert moved() == 0
    assert registry.put_many({"fn": code(DIGEST_B), "other": code(DIGEST_A)}) == {"fn": True, "other": False}
    assert moved() == 1
    registry.publish("fn")
    assert moved() == 1
    registry.publish("fn")
    assert moved() == 0
    registry.set_alias(AliasRecord("fn", "live", 1))
    assert moved() == 1
    registry.set_reserved_concurrency("fn", 5)
    assert moved() == 1
    registry.set_provisioned_concurrency("fn", "live", 2)
    assert moved() == 1
    registry.delete_alias("fn", "live")
    assert moved() == 1
    with pytest.raises(NotFound):
        registry.delete_alias("fn", "live")
    assert moved() == 0


def test_concurrency_settings(registry):
    with_versions(registry, DIGEST_A)
    registry.set_alias(AliasRecord("fn", "live", 1))
    registry.set_reserved_concurrency("fn", 3)
    registry.put_latest("fn", code(DIGEST_B))  # a deploy without reserved_concurrency in the manifest keeps it
    assert registry.get_function("fn").reserved_concurrency == 3
    registry.put_latest("fn", code(DIGEST_C, reserved_concurrency=7))  # the manifest's value applies when set
    assert registry.get_function("fn").reserved_concurrency == 7
    registry.set_reserved_concurrency("fn", None)
    assert registry.get_function("fn").reserved_concurrency is None
    with pytest.raises(RegistryError, match="0 or more"):
        registry.set_reserved_concurrency("fn", -1)

    registry.set_provisioned_concurrency("fn", "live", 2)
    registry.set_provisioned_concurrency("fn", "1", 1)
    assert registry.snapshot().provisioned == {("fn", "live"): 2, ("fn", "1"): 1}
    with pytest.raises(RegistryError, match="not \\$LATEST"):
        registry.set_provisioned_concurrency("fn", "$LATEST", 1)
    with pytest.raises(NotFound, match="no alias 'beta'"):
        registry.set_provisioned_concurrency("fn", "beta", 1)
    registry.delete_alias("fn", "live")  # its provisioned setting goes with it
    assert registry.snapshot().provisioned == {("fn", "1"): 1}
    registry.set_provisioned_concurrency("fn", "1", 0)
    assert registry.snapshot().provisioned == {}


def test_snapshot_is_one_consistent_view_while_a_writer_deploys(control_location, registry):
    """Two functions always deployed together: no snapshot may show one moved and not the other."""
    registry.put_many({"a": code(f"{0:064x}"), "b": code(f"{0:064x}")})
    base = registry.revision()
    generations = 300
    stop = threading.Event()

    def writer() -> None:
        own = open_control_store(control_location)  # another connection, as a CLI would have
        for gen in range(1, generations + 1):
            own.registry.put_many({"a": code(f"{gen:064x}"), "b": code(f"{gen:064x}")})
        own.close()
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    while not stop.is_set() or not seen:
        snap = registry.snapshot()
        a, b = snap.functions["a"].latest.digest, snap.functions["b"].latest.digest
        assert a == b, f"a torn snapshot at revision {snap.revision}: a={a[-4:]} b={b[-4:]}"
        assert snap.revision == base + int(a, 16)  # the revision read belongs to the same transaction
        seen.add(snap.revision)
    thread.join()
    assert registry.revision() == base + generations
    assert len(seen) > 1  # the reader really overlapped the writer


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


@pytest.mark.parametrize("rng", [random.Random(20240611).random, None], ids=["seeded", "default-rng"])
def test_weighted_alias_split_is_within_binomial_bounds(registry, rng):
    with_versions(registry, DIGEST_A, DIGEST_B)
    registry.set_alias(AliasRecord("fn", "live", 1, extra_version=2, extra_weight=0.2))
    catalog = FunctionCatalog.from_snapshot(registry.snapshot())
    draws = 20_000
    picks = [catalog.select("fn:live", rng=rng) if rng else catalog.select("fn:live") for _ in range(draws)]
    versions = [p.version for p in picks]
    assert set(versions) == {"1", "2"}
    assert {p.digest for p in picks if p.version == "2"} == {DIGEST_B}
    low, high = binomial_bound(draws, 0.2)
    assert low <= versions.count("2") <= high, f"{versions.count('2')} of {draws} went to the canary, expected {low:.0f}..{high:.0f}"


def test_weight_edges_pick_the_canary_below_the_weight(registry):
    with_versions(registry, DIGEST_A, DIGEST_B)
    registry.set_alias(AliasRecord("fn", "live", 1, extra_version=2, extra_weight=0.25))
    catalog = FunctionCatalog.from_snapshot(registry.snapshot())
    assert catalog.select("fn:live", rng=lambda: 0.0).version == "2"
    assert catalog.select("fn:live", rng=lambda: 0.2499).version == "2"
    assert catalog.select("fn:live", rng=lambda: 0.25).version == "1"
    assert catalog.select("fn:live", rng=lambda: 0.9999).version == "1"


def test_a_read_modify_write_of_latest_refuses_a_stale_revision(registry):
    first, _ = registry.put_latest("fn", code("a" * 64))
    registry.put_latest("fn", code("b" * 64))  # a deploy lands between the read and the write
    revision = registry.revision()
    with pytest.raises(Conflict):
        registry.put_latest("fn", code("a" * 64, memory_mb=64), expected_revision_id=first.revision_id)
    assert registry.get_function("fn").latest.digest == "b" * 64 and registry.revision() == revision
    current = registry.get_function("fn")
    updated, changed = registry.put_latest("fn", code("b" * 64, memory_mb=64), expected_revision_id=current.revision_id)
    assert changed and updated.latest.config["memory_mb"] == 64


# --- a registry that lost its state refuses to open ------------------------------------------------------------


def test_an_emptied_control_database_refuses_to_open_instead_of_starting_fresh(tmp_path):
    path = tmp_path / "control.db"
    registry = SqlRegistry(SqliteDatabase(path))
    registry.put_latest("fn", CodeAndConfig("a" * 64, {"memory_mb": 128}))
    registry.publish("fn")
    registry.set_alias(AliasRecord("fn", "live", 1))
    registry.db.close()
    for suffix in ("", "-wal", "-shm"):
        target = path.with_name(path.name + suffix)
        if target.exists():
            target.write_bytes(b"")  # emptied, as a bad restore or a full disk leaves it
    with pytest.raises(RegistryLost) as info:
        SqlRegistry(SqliteDatabase(path))
    message = str(info.value)
    assert str(path) in message and "1 published versions and 1 aliases" in message and "restore" in message
    assert "delete" in message and "control.db.held" in message
    (tmp_path / "control.db.held").unlink()  # the operator's explicit choice: a new registry
    assert SqlRegistry(SqliteDatabase(path)).list_functions() == []


def test_a_registry_that_never_published_anything_opens_empty(tmp_path):
    path = tmp_path / "control.db"
    SqlRegistry(SqliteDatabase(path)).put_latest("fn", CodeAndConfig("a" * 64, {}))
    path.unlink()
    assert SqlRegistry(SqliteDatabase(path)).list_functions() == []  # only $LATEST: serve re-deploys it
