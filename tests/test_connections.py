"""An ingestion no one holds any more lets its database connections go."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from sqlalchemy import text

from ingestion.store import Store
from tests.support.ingestions import make_ingestion
from tests.support.waiting import wait_until


def _connections(url: str) -> int:
    store = Store(url)
    try:
        with store.db.read() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            ).scalar_one()
    finally:
        store.dispose()
    return int(count)


@pytest.mark.timeout(60)
def test_ingestions_dropped_by_their_owner_close_their_connections(
    pg_url: str, tmp_path: Path
) -> None:
    gc.collect()
    before = _connections(pg_url)
    for _ in range(30):
        ingestion = make_ingestion(pg_url, tmp_path)
        ingestion.store.count_entities()  # opens a pooled connection, kept idle by the pool
    del ingestion
    gc.collect()
    # a server process ends a moment after its client closed the connection
    wait_until(lambda: _connections(pg_url) <= before + 1, timeout=10, what="connections closed")


@pytest.mark.timeout(60)
def test_close_releases_the_connections_at_once(pg_url: str, tmp_path: Path) -> None:
    gc.collect()
    before = _connections(pg_url)
    ingestion = make_ingestion(pg_url, tmp_path)
    ingestion.store.count_entities()
    assert _connections(pg_url) == before + 1
    ingestion.close()
    wait_until(lambda: _connections(pg_url) == before, timeout=10, what="connections closed")
