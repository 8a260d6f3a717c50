"""Fixtures: real databases (SQLite and Postgres), Redis, sources on 127.0.0.1, worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from sqlalchemy import text

from ingestion import IncrementalIngestion, Settings
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import Store
from ingestion.store.models import metadata
from providers.synthetic import SourceServer, SyntheticSource

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_HOST = os.environ.get("TEST_PG_HOST", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


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
    with store.engine.begin() as conn:
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


def make_ingestion(database_url: str, tmp_path: Path, **settings: Any) -> IncrementalIngestion:
    """An ``IncrementalIngestion`` on ``database_url`` with a file broker under ``tmp_path``."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": EMBEDDED_BROKER,
        "broker_dir": tmp_path / "broker",
        "page_timeout": 5.0,
        "time_limit_grace": 1.0,
    }
    values.update(settings)
    return IncrementalIngestion(settings=Settings(**values))


# -- workers ------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The local Redis; each test's workers use a queue of their own (see ``workers_factory``)."""
    url = f"{REDIS_URL}/13"
    redis.Redis.from_url(url).ping()
    return url


class Workers:
    """Real ``celery worker`` processes running ``tests/apps/synthetic_app.py``."""

    def __init__(self, tmp_path: Path, env: dict[str, str], queue: str) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.queue = queue
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[Any] = []

    def start(
        self, name: str, *, beat: bool = False, concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.synthetic_app",
            "worker",
            "--loglevel=INFO",
            f"--hostname={name}@%h",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "--without-mingle",
            "--without-gossip",
        ]
        if beat:
            args += ["--beat", f"--schedule={self.tmp_path / (name + '-beat')}"]
        return self._spawn(name, args, b" ready.")

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        """A separate ``celery beat`` process: the reconciler's clock."""
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.synthetic_app",
            "beat",
            "--loglevel=INFO",
            f"--schedule={self.tmp_path / (name + '-schedule')}",
        ]
        return self._spawn(name, args, b"beat: Starting")

    def _spawn(self, name: str, args: list[str], started: bytes) -> subprocess.Popen[bytes]:
        """Start ``args`` in a session of its own, logging to NAME.log; wait for ``started``."""
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self.files.append(log)
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        wait_until(lambda: started in self.log(name), timeout=60, what=f"{name} started")
        return proc

    def log(self, name: str) -> bytes:
        return (self.tmp_path / f"{name}.log").read_bytes()

    def logs(self) -> str:
        return "\n".join(self.log(n).decode(errors="replace") for n in self.procs)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool processes at once."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for file in self.files:
            file.close()


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
        if broker.startswith("redis://"):  # leave nothing of this test's queue behind
            client = redis.Redis.from_url(broker)
            keys = list(client.scan_iter(match=f"*{workers.queue}*"))
            if keys:
                client.delete(*keys)
            client.close()


def client_ingestion(workers: Workers) -> IncrementalIngestion:
    """The test process's own view of what the workers run: same providers, database, queue."""
    from tests.apps.synthetic_app import build

    env = workers.env
    return build(
        Settings(
            database_url=env["INGESTION_DATABASE_URL"],
            broker_url=env["CELERY_BROKER_URL"],
            broker_dir=Path(env["INGESTION_BROKER_DIR"]),
            queue=env["INGESTION_QUEUE"],
            page_timeout=float(env["INGESTION_PAGE_TIMEOUT"]),
            time_limit_grace=float(env["INGESTION_TIME_LIMIT_GRACE"]),
        ),
        json.loads(env["TEST_PROVIDERS"]),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
