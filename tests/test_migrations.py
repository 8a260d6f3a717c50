"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from ingestion import DeferredEntity, EntityIteratorResult, IncrementalEntityProvider
from ingestion.entities import CANONICAL_VERSION, legacy_hash, prepare
from ingestion.store import Store
from ingestion.store.migrate import downgrade
from ingestion.store.models import metadata
from tests.support.ingestions import make_ingestion


def _diff(store: Store) -> list[object]:
    with store.db.sql_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


@pytest.mark.timeout(60)
def test_a_migrated_database_matches_the_declared_schema(database_url: str) -> None:
    store = Store(database_url)
    try:
        assert _diff(store) == []
    finally:
        store.dispose()


@pytest.mark.timeout(60)
def test_migrating_twice_is_harmless_and_downgrade_removes_everything(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    store.migrate()
    store.migrate()
    tables = set(inspect(store.db.sql_engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= tables
    downgrade(store.db.sql_engine, "base")
    assert set(inspect(store.db.sql_engine).get_table_names()) <= {"alembic_version"}
    store.migrate()
    assert _diff(store) == []
    store.dispose()


@pytest.mark.timeout(60)
def test_renaming_the_page_table_keeps_its_rows(database_url: str) -> None:
    # Given a database at revision 0002 with a cycle and two page rows in ingestion_marks
    store = Store(database_url)
    try:
        downgrade(store.db.sql_engine, "0002")
        with store.db.sql_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ingestion_cycles (id, provider, status, bursts, pages, entities,"
                    " written, unchanged, rejected, removed, blocked, started_at)"
                    " VALUES (41, 'p', 'running', 1, 2, 3, 3, 0, 0, 0, 0, '2026-01-01 00:00:00')"
                )
            )
            for sequence in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO ingestion_marks (cycle_id, sequence, cursor, entities, "
                        "created_at) VALUES (41, :s, :c, 1, '2026-01-01 00:00:00')"
                    ),
                    {"s": sequence, "c": f'{{"page": {sequence + 1}}}'},
                )
        # When it is migrated to the latest schema
        store.migrate()
        # Then the rows are the checkpoints of the cycle, and the schema is the declared one
        rows = store.checkpoints("p", cycle_id=41)
        assert [(r["sequence"], r["cursor"]) for r in rows] == [
            (2, '{"page": 3}'),
            (1, '{"page": 2}'),
        ]
        assert _diff(store) == []
        # And the database still refuses a second commit of the same page
        with pytest.raises(IntegrityError), store.db.sql_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ingestion_checkpoints (cycle_id, sequence, entities, created_at)"
                    " VALUES (41, 2, 1, '2026-01-01 00:00:00')"
                )
            )
    finally:
        store.dispose()


class _Listed(IncrementalEntityProvider[None, None]):
    """One page of fixed entities."""

    def __init__(self, entities: list[dict[str, Any]]) -> None:
        self.entities = entities

    def get_provider_name(self) -> str:
        return "listed"

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(self, context: None, cursor: None = None) -> EntityIteratorResult[None]:
        return EntityIteratorResult(
            done=True, entities=[DeferredEntity(e) for e in self.entities], cursor=None
        )


def _listed_entity(name: str, value: object) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "labels": {"tier": "a"}},
        "spec": {"owner": "team-é", "value": value},
    }


@pytest.mark.timeout(60)
def test_a_catalog_hashed_before_the_encoding_changed_sees_no_spurious_change(
    database_url: str, tmp_path: Path
) -> None:
    # Given a catalog written at revision 0004, its hashes made by the version 1 encoder; one
    # entity holds a float the version 2 encoder writes differently (0.00001, not 1e-05)
    entities = [_listed_entity(f"e{n}", n) for n in range(5)]
    entities += [_listed_entity("small-float", 1e-05), _listed_entity("other-float", 2.5)]
    store = Store(database_url)
    try:
        downgrade(store.db.sql_engine, "0004")
        with store.db.sql_engine.begin() as conn:
            for entity in entities:
                item = prepare(entity, "listed", None)
                legacy = json.dumps(
                    item.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                )
                conn.execute(
                    text(
                        "INSERT INTO catalog_entities (ref, provider, location_key, entity, hash,"
                        " mark_cycle, created_at, updated_at) VALUES (:ref, 'listed', NULL,"
                        " :entity, :hash, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    ),
                    {
                        "ref": item.ref,
                        "entity": legacy,
                        "hash": hashlib.sha256(legacy.encode()).hexdigest(),
                    },
                )
        assert prepare(entities[5], "listed", None).hash != legacy_hash(
            prepare(entities[5], "listed", None).body
        ), "the two encodings differ for this entity"
    finally:
        store.dispose()

    # When the catalog is upgraded and a cycle reads the same source
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.store.migrate()
    ingestion.add_provider(_Listed(entities))
    reports = ingestion.run_cycle("listed")

    # Then nothing counts as changed, nothing is rewritten, and nothing is removed
    assert [r.outcome for r in reports] == ["done"]
    assert (reports[0].written, reports[0].unchanged) == (0, len(entities))
    assert ingestion.catalog.count("listed") == len(entities)
    with ingestion.store.db.sql_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT hash_version, updated_at FROM catalog_entities ORDER BY ref")
        ).all()
    assert {row.hash_version for row in rows} == {1}
    assert all(str(row.updated_at).startswith("2026-01-01") for row in rows)

    # And an entity that does change is rewritten with a hash of the current encoding
    entities[5] = _listed_entity("small-float", 2e-05)
    changed = make_ingestion(database_url, tmp_path / "again")
    changed.add_provider(_Listed(entities))
    reports = changed.run_cycle("listed")
    assert (reports[0].written, reports[0].unchanged) == (1, len(entities) - 1)
    with changed.store.db.sql_engine.connect() as conn:
        version = conn.execute(
            text("SELECT hash_version FROM catalog_entities WHERE ref LIKE '%small-float'")
        ).scalar_one()
    assert version == CANONICAL_VERSION


@pytest.mark.timeout(60)
def test_moving_the_bodies_to_their_own_table_keeps_every_entity_both_ways(
    database_url: str, tmp_path: Path
) -> None:
    # Given a catalog of five entities written by a cycle
    entities = [_listed_entity(f"e{n}", n) for n in range(5)]
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(_Listed(entities))
    ingestion.run_cycle("listed")
    before = {e.ref: e.entity for e in ingestion.catalog.iter()}
    assert len(before) == 5
    engine = ingestion.store.db.sql_engine

    # When the schema goes back to revision 0007, the bodies are in the catalog's rows again
    downgrade(engine, "0007")
    assert "catalog_bodies" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ref, entity FROM catalog_entities")).all()
    assert {ref: _decoded(body) for ref, body in rows} == before

    # And when it is upgraded again, every entity reads as before and a cycle over the same
    # source finds each unchanged
    again = make_ingestion(database_url, tmp_path / "again")
    again.store.migrate()
    again.add_provider(_Listed(entities))
    assert {e.ref: e.entity for e in again.catalog.iter()} == before
    [report] = again.run_cycle("listed")
    assert (report.written, report.unchanged) == (0, 5)
    assert _diff(again.store) == []


def _decoded(body: Any) -> Any:
    """A body as read by plain SQL: already decoded from ``jsonb``, text on SQLite."""
    return json.loads(body) if isinstance(body, str) else body
