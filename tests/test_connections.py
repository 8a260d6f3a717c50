"""An ingestion no one holds any more lets its database connections go."""

from __future__ import annotations

import gc
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ingestion import ProviderOptions
from ingestion.store import Claim, Store
from tests.support.ingestions import make_ingestion
from tests.support.waiting import wait_until


def _clients(url: str) -> set[int]:
    """The server processes of the client connections to the database of ``url``, but the one
    asking: not an autovacuum worker visiting it, nor a connection another test left closing."""
    store = Store(url)
    try:
        with store.db.read() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).all()
    finally:
        store.dispose()
    return set(pids)


@pytest.mark.timeout(60)
def test_ingestions_dropped_by_their_owner_close_their_connections(
    pg_url: str, tmp_path: Path
) -> None:
    gc.collect()
    before = _clients(pg_url)
    for _ in range(30):
        ingestion = make_ingestion(pg_url, tmp_path)
        ingestion.store.count_entities()  # opens a pooled connection, kept idle by the pool
    del ingestion
    gc.collect()
    # a server process ends a moment after its client closed the connection
    wait_until(lambda: len(_clients(pg_url) - before) <= 1, timeout=10, what="connections closed")


@pytest.mark.timeout(60)
def test_close_releases_the_connections_at_once(pg_url: str, tmp_path: Path) -> None:
    gc.collect()
    before = _clients(pg_url)
    ingestion = make_ingestion(pg_url, tmp_path)
    ingestion.store.count_entities()
    opened = _clients(pg_url) - before
    assert len(opened) == 1
    ingestion.close()
    wait_until(lambda: not _clients(pg_url) & opened, timeout=10, what="connection closed")


def _claim_in_thread(store: Store, name: str, ticket: int) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def claim() -> None:
        try:
            lease = timedelta(seconds=10)
            outcome.append(store.claim(name, ticket, "w2@host/2", lease, ProviderOptions()))
        except Exception as exc:  # reported by the test, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=claim, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(60)
def test_a_frozen_session_holding_a_provider_row_is_ended_and_the_row_can_be_claimed(
    pg_url: str,
) -> None:
    """A worker frozen (SIGSTOP) in the middle of a page commit holds its provider's row lock.
    Postgres ends its session once it has sat idle in its transaction for the configured time,
    so another worker's claim goes through instead of waiting for the frozen one forever."""
    frozen_store = Store(pg_url, idle_in_transaction=1.0)
    store = Store(pg_url)
    frozen = frozen_store.db.sql_engine.connect()
    try:
        store.ensure_providers(["services"])
        ticket = store.status("services").ticket
        # Given a session that locked the provider's row and then stopped sending anything
        frozen.begin()
        frozen.execute(text("SELECT name FROM ingestion_providers FOR UPDATE"))
        # When another worker claims the provider
        began = time.monotonic()
        thread, outcome = _claim_in_thread(store, "services", ticket)
        thread.join(timeout=20)
        # Then it waited only until Postgres ended the idle session, and the claim went through
        assert not thread.is_alive(), "the claim still waits on the frozen session's lock"
        assert time.monotonic() - began < 10
        assert outcome and isinstance(outcome[0], Claim), outcome
        with pytest.raises(DBAPIError, match=r"idle-in-transaction|closed the connection"):
            frozen.execute(text("SELECT 1"))
    finally:
        frozen.close()
        frozen_store.dispose()
        store.dispose()


def test_the_session_timeout_keeps_the_options_the_url_gives(pg_url: str) -> None:
    url = f"{pg_url}?options=-c%20statement_timeout%3D5000"
    store = Store(url, idle_in_transaction=2.5)
    try:
        with store.db.read() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "5s"
            idle = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
            assert idle == "2500ms"
    finally:
        store.dispose()


def test_an_ingestion_ends_sessions_idle_in_a_transaction_after_its_lease(
    pg_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(pg_url, tmp_path)
    try:
        with ingestion.store.db.read() as conn:
            idle = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
        assert idle == f"{round(ingestion.settings.lease_seconds)}s"
    finally:
        ingestion.store.dispose()
