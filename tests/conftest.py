"""Fixtures: real databases (SQLite and Postgres), brokers (Redis, RabbitMQ), sources, workers."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg2
import pytest
import redis
from sqlalchemy import text

from ingestion.store import Store
from ingestion.store.models import metadata
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.brokers import is_amqp, remove_queue
from tests.support.paths import PG_ADMIN_DSN, PG_HOST, RABBITMQ_URL, REDIS_URL, ROOT, unique
from tests.support.workers import Workers


@pytest.fixture(autouse=True)
def _release_connections() -> Iterator[None]:
    """What a test made is collected when it ends, and with it its database connections: a
    long session never runs the server out of connections."""
    yield
    gc.collect()


# -- databases ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A Postgres database of its own for this test session, migrated once."""
    name = f"ingestion_test_{os.getpid()}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_HOST}/{name}"
    store = Store(url)
    store.migrate()
    store.dispose()
    yield url
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _truncate(url: str) -> None:
    store = Store(url)
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    with store.db.sql_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    store.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database: SQLite in a file, or the session's Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ingestion.db'}"
        store = Store(url)
        store.migrate()
        store.dispose()
        return url
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's Postgres database, emptied."""
    _truncate(pg_database)
    return pg_database


# -- sources ------------------------------------------------------------------------------


@pytest.fixture
def source() -> SyntheticSource:
    return SyntheticSource(count=600, per_page=50)


@pytest.fixture
def source_server(source: SyntheticSource) -> Iterator[SourceServer]:
    with SourceServer(source) as server:
        yield server


# -- workers ------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The local Redis; each test's workers use a queue of their own (see ``workers_factory``)."""
    url = f"{REDIS_URL}/13"
    redis.Redis.from_url(url).ping()
    return url


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """A broker server: the local Redis or the local RabbitMQ (guest, vhost /)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
    return RABBITMQ_URL


@pytest.fixture
def workers_factory(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    """``make(database_url, broker_url, providers=[...], **settings)`` -> :class:`Workers`."""
    made: list[Workers] = []

    def make(
        database_url: str, broker_url: str, providers: list[dict[str, Any]], **settings: Any
    ) -> Workers:
        env = dict(os.environ)
        queue = unique("ingestion-test")
        env.update(
            {
                "INGESTION_DATABASE_URL": database_url,
                "CELERY_BROKER_URL": broker_url,
                "INGESTION_BROKER_DIR": str(tmp_path / "broker"),
                "INGESTION_PAGE_TIMEOUT": "3",
                "INGESTION_TIME_LIMIT_GRACE": "1",
                "INGESTION_RECONCILE_INTERVAL": "1",
                "INGESTION_RESEND_AFTER": "1",
                "INGESTION_QUEUE": queue,
                "TEST_PROVIDERS": json.dumps(providers),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update({f"INGESTION_{k.upper()}": str(v) for k, v in settings.items()})
        workers = Workers(tmp_path, env, queue)
        made.append(workers)
        return workers

    yield make
    for workers in made:
        workers.stop_all()
        broker = workers.env["CELERY_BROKER_URL"]
        if broker.startswith("redis://") or is_amqp(broker):
            remove_queue(broker, workers.queue)  # leave nothing of this test's queue behind
