"""The parts the benchmarks run on: a database of their own, worker processes, clocks, RSS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import redis
from celery import Celery
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from ingestion.store import Store
from ingestion.store import models as m
from ingestion.tasks import BURST

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark could not run to the end; the message says where."""


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- databases ----------------------------------------------------------------------------


@dataclass
class Postgres:
    """A database of the benchmarks' own on the local server, created empty and migrated."""

    name: str
    admin_dsn: str
    host_url: str  # postgresql+psycopg2://user@host:port

    @property
    def url(self) -> str:
        return f"{self.host_url}/{self.name}"

    @property
    def dsn(self) -> str:
        return self.admin_dsn.replace("dbname=postgres", f"dbname={self.name}")

    def _admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> Postgres:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{self.name}"')
        store = Store(self.url)
        store.migrate()
        store.dispose()
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def connect(self) -> Any:
        return psycopg2.connect(self.dsn)

    def execute(self, *statements: str, autocommit: bool = True) -> None:
        """Run ``statements`` outside a transaction (VACUUM, CHECKPOINT) or in one."""
        conn = self.connect()
        conn.autocommit = autocommit
        try:
            with conn.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
            if not autocommit:
                conn.commit()
        finally:
            conn.close()

    def empty(self) -> None:
        """Empty every table of the engine's schema and restart the ids."""
        tables = ", ".join(t.name for t in m.metadata.sorted_tables)
        self.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE", "CHECKPOINT")


# -- reading the engine's records ---------------------------------------------------------


@dataclass(frozen=True)
class CycleTiming:
    """A completed cycle as the engine recorded it (database clock)."""

    cycle_id: int
    entities: int
    written: int
    unchanged: int
    removed: int
    bursts: int
    pages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.entities / self.seconds


class Records:
    """Reads the engine's tables with a connection of its own (never a write lock)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def _one_provider_error(self, provider: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(m.providers.c.last_error).where(m.providers.c.name == provider)
            ).scalar()
        return None if value is None else str(value)

    def completed_cycle(self, provider: str, after: int = 0) -> CycleTiming | None:
        c = m.cycles.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(m.cycles)
                .where(c.provider == provider, c.status == "completed", c.id > after)
                .order_by(c.id)
                .limit(1)
            ).first()
        if row is None:
            return None
        seconds = (row.ended_at - row.started_at).total_seconds()
        return CycleTiming(
            row.id,
            row.entities,
            row.written,
            row.unchanged,
            row.removed,
            row.bursts,
            row.pages,
            seconds,
        )

    def wait_cycle(self, provider: str, *, after: int = 0, timeout: float) -> CycleTiming:
        """The first completed cycle of ``provider`` after cycle ``after``; fail on an error."""

        def check() -> CycleTiming | None:
            error = self._one_provider_error(provider)
            if error is not None:
                raise BenchError(f"provider {provider} failed a burst: {error[:2000]}")
            return self.completed_cycle(provider, after)

        result: CycleTiming = wait_until(
            check, timeout=timeout, interval=0.25, what=f"a completed cycle of {provider}"
        )
        return result

    def bursts(self, cycle_id: int) -> list[tuple[int, datetime, datetime]]:
        b = m.bursts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(b.number, b.started_at, b.ended_at)
                .where(b.cycle_id == cycle_id)
                .order_by(b.number)
            ).all()
        return [(r.number, r.started_at, r.ended_at) for r in rows]

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()


# -- workers ------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGESTION_", "CELERY_", "BENCH_PROVIDERS"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Worker:
    """One real ``celery worker`` process (prefork, ``concurrency`` pool processes, one by
    default) running ``bench.worker``."""

    workdir: Path
    database_url: str
    broker_url: str
    providers: list[dict[str, Any]]
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:6]}")
    queue: str = field(default_factory=lambda: f"ingestion-bench-{uuid.uuid4().hex[:8]}")
    concurrency: int = 1
    #: A YAML file of providers (see bench.app) instead of ``providers``, for thousands of them.
    providers_file: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    client: Celery | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def broker_dir(self) -> Path:
        return self.workdir / f"{self.name}-broker"

    def env(self) -> dict[str, str]:
        env = _clean_env()
        env.update(
            {
                "INGESTION_DATABASE_URL": self.database_url,
                "INGESTION_BROKER_URL": self.broker_url,
                "INGESTION_BROKER_DIR": str(self.broker_dir),
                "INGESTION_QUEUE": self.queue,
                "BENCH_PROVIDERS": json.dumps(self.providers),
            }
        )
        if self.providers_file is not None:
            env["BENCH_PROVIDERS_FILE"] = str(self.providers_file)
        env.update(self.extra_env)
        return env

    def send(self, task: str, *args: Any, **kwargs: Any) -> None:
        """Send a message to this worker's queue, by task name."""
        if self.client is None:
            self.client = Celery("bench-driver", broker=self.broker_url, set_as_current=False)
            self.client.conf.task_serializer = "json"
        self.client.send_task(task, args=args, kwargs=kwargs, queue=self.queue)

    def start_cycle(self, provider: str) -> None:
        """Begin a new cycle of ``provider`` now, as an operator's ``start`` does."""
        store = Store(self.database_url)
        try:
            doorbell = store.start(provider)
        finally:
            store.dispose()
        self.send(
            BURST,
            provider=provider,
            ticket=doorbell.ticket,
            cycle=doorbell.cycle_id,
            burst=doorbell.burst,
        )

    def start(self) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.worker",
                "worker",
                "--loglevel=INFO",
                f"--hostname={self.name}@%h",
                f"--concurrency={self.concurrency}",
                "--pool=prefork",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout=120, what=f"worker {self.name} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"worker {self.name} exited:\n{self.log()[-4000:]}")
        return b" ready." in self.log_path.read_bytes()

    def log(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (they run the bursts)."""
        assert self.proc is not None
        return [pid for pid, ppid in _processes() if ppid == self.proc.pid]

    def peak_rss(self) -> dict[str, int]:
        """Peak resident memory (VmHWM, bytes) of the main process and each pool process."""
        assert self.proc is not None
        peaks = {"main": _vm_hwm(self.proc.pid)}
        for i, pid in enumerate(self.pool_pids()):
            peaks[f"pool-{i}"] = _vm_hwm(pid)
        return peaks

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._forget_queue()

    def _forget_queue(self) -> None:
        """Remove what this worker's queue left in Redis (each worker has a queue of its own)."""
        if not self.broker_url.startswith("redis://"):
            return
        client = redis.Redis.from_url(self.broker_url)
        try:
            client.delete(
                self.queue,
                f"_kombu.binding.{self.queue}",
                f"_kombu.binding_permanent.{self.queue}",
            )
        finally:
            client.close()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _processes() -> Iterator[tuple[int, int]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        yield int(entry.name), int(fields[1])


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for process {pid}")
