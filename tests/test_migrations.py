"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ingestion.store import Store
from ingestion.store.migrate import downgrade
from ingestion.store.models import metadata


def _diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
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
    tables = set(inspect(store.engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= tables
    downgrade(store.engine, "base")
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    store.migrate()
    assert _diff(store) == []
    store.dispose()
