"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from ingestion.store import Store
from ingestion.store.migrate import downgrade
from ingestion.store.models import metadata


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
