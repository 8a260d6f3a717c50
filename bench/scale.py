"""Scale-out figures: more worker processes, and thousands of providers.

- ``scaleout``: 8 providers of 50,000 entities with 1, 2 and 4 worker pool processes.
- ``providers``: 1,000 and 10,000 providers of 100 entities (pages of 50, rest 30 s) listed in
  a YAML file, one worker with two pool processes and Celery beat, on a Redis of their own
  (started here, on a free port) so that its command counts are the run's alone.
- ``ticks``: the reconciler's tick in this process at 10,000 providers: idle, and announcing
  1,000 due steps, with the statements it sends.

Each figure is bounded in time: a run that does not get every first cycle done within its cap
reports what it reached.
"""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from sqlalchemy import event, text, update

from bench.figures import Config, _throughput_spec
from bench.harness import ROOT, BenchError, Postgres, Records, Worker, _clean_env, wait_until

SCALEOUT_PROVIDERS = 8
SCALEOUT_ENTITIES = 50_000
SCALEOUT_PROCESSES = (1, 2, 4)
MANY = (1_000, 10_000)
MANY_ENTITIES = 100
MANY_PAGE = 50
MANY_REST = 30.0
#: Seconds each many-providers run may take for its first cycles, then to count cycles.
MANY_CAP = {1_000: 120.0, 10_000: 240.0}
RATE_WINDOW = 60.0
TICK_PROVIDERS = 10_000
TICK_DUE = 1_000

_TICK_LINE = re.compile(r"ingestion\.reconcile\[[^\]]+\] succeeded in ([0-9.e-]+)s: (\d+)")


# -- a Redis of the run's own -------------------------------------------------------------


@contextmanager
def throwaway_redis(workdir: Path) -> Iterator[str]:
    """A ``redis-server`` on a free port, without persistence, stopped at the end: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed: the broker figures need one of their own")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = workdir / f"redis-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: _pings(client), timeout=20, what="the throwaway redis-server")
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def command_counts(url: str) -> dict[str, int]:
    """``INFO commandstats``: calls per command since the server started."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


# -- scale-out: one set of providers, more pool processes ----------------------------------


@dataclass(frozen=True)
class ScaleOutRun:
    processes: int
    entities: int
    seconds: float  # from the first claim to the last cycle's end (database clock)

    @property
    def rate(self) -> float:
        return self.entities / self.seconds


@dataclass(frozen=True)
class ScaleOut:
    providers: int
    per_provider: int
    runs: list[ScaleOutRun]


def scaleout(config: Config) -> ScaleOut:
    """8 providers of 50,000 entities (times the scale) with 1, 2 and 4 pool processes."""
    count = config.size(SCALEOUT_ENTITIES)
    names = [f"scale-{i}" for i in range(SCALEOUT_PROVIDERS)]
    specs = [{**_throughput_spec(name, count), "first": i * count} for i, name in enumerate(names)]
    db = config.postgres().create()
    runs: list[ScaleOutRun] = []
    try:
        for processes in SCALEOUT_PROCESSES:
            db.empty()
            records = Records(db.url)
            try:
                with Worker(config.workdir, db.url, config.redis_url, specs, concurrency=processes):
                    timeout = config.timeout(count * len(names))
                    for name in names:
                        records.wait_cycle(name, timeout=timeout)
                seconds = records.scalar(
                    "SELECT EXTRACT(EPOCH FROM max(ended_at) - min(started_at)) "
                    "FROM ingestion_cycles WHERE status = 'completed'"
                )
                entities = records.scalar(
                    "SELECT sum(entities) FROM ingestion_cycles WHERE status = 'completed'"
                )
                written = records.scalar(
                    "SELECT sum(written) FROM ingestion_cycles WHERE status = 'completed'"
                )
            finally:
                records.close()
            if int(written) != count * len(names):
                raise BenchError(f"the cycles wrote {written} entities, expected {count * 8}")
            runs.append(ScaleOutRun(processes, int(entities), float(seconds)))
    finally:
        db.drop()
    return ScaleOut(len(names), count, runs)


# -- many providers -----------------------------------------------------------------------


@dataclass(frozen=True)
class ManyRun:
    providers: int
    cap: float
    first_cycles: int  # providers whose first cycle completed within the cap
    first_seconds: float | None  # from the worker's start until every first cycle completed
    progress: list[tuple[float, int]]  # (seconds, first cycles completed so far)
    cycles_per_minute: float  # completed cycles per minute over the window after
    window: float  # seconds of that window
    ticks: list[tuple[float, int]]  # (seconds, steps announced) of each reconciler tick
    bursts: int
    commands: dict[str, int]  # Redis commands over the whole run, by command
    skipped: int  # bursts skipped as stale or duplicate (announced twice)

    @property
    def commands_per_burst(self) -> float:
        return sum(self.commands.values()) / max(1, self.bursts)


@dataclass(frozen=True)
class Many:
    runs: list[ManyRun] = field(default_factory=list)


def write_providers_file(path: Path, count: int, entities: int = MANY_ENTITIES) -> Path:
    """The YAML file of ``count`` providers the worker loads (``BENCH_PROVIDERS_FILE``)."""
    providers = [
        {
            "name": f"many-{i:05d}",
            "count": entities,
            "page_size": MANY_PAGE,
            "first": i * entities,
            "options": {"rest_length": MANY_REST},
        }
        for i in range(count)
    ]
    path.write_text(yaml.safe_dump({"providers": providers}, sort_keys=False))
    return path


def providers(config: Config) -> Many:
    """1,000 and 10,000 providers from a file: first cycles, cycles per minute, ticks, broker."""
    db = config.postgres().create()
    result = Many()
    try:
        for count in MANY:
            count = max(10, round(count * min(1.0, config.scale)))
            cap = MANY_CAP.get(count, 120.0)
            db.empty()
            with throwaway_redis(config.workdir) as broker:
                result.runs.append(_many(config, db, broker, count, cap))
    finally:
        db.drop()
    return result


def _many(config: Config, db: Postgres, broker: str, count: int, cap: float) -> ManyRun:
    path = write_providers_file(config.workdir / f"providers-{count}.yaml", count)
    records = Records(db.url)
    worker = Worker(config.workdir, db.url, broker, [], concurrency=2, providers_file=path)
    beat: subprocess.Popen[bytes] | None = None
    before = command_counts(broker)
    progress: list[tuple[float, int]] = []
    first_seconds: float | None = None
    try:
        started = time.monotonic()
        worker.start()
        beat = _start_beat(config.workdir, worker)
        done = 0
        while time.monotonic() - started < cap:
            done = int(
                records.scalar(
                    "SELECT count(DISTINCT provider) FROM ingestion_cycles "
                    "WHERE status = 'completed'"
                )
            )
            progress.append((time.monotonic() - started, done))
            if done >= count:
                first_seconds = time.monotonic() - started
                break
            time.sleep(2.0)
        # Cycles per minute: over a window after the first cycles (or after the cap).
        window = RATE_WINDOW if first_seconds is not None else min(RATE_WINDOW, cap / 4)
        completed_before = int(
            records.scalar("SELECT count(*) FROM ingestion_cycles WHERE status = 'completed'")
        )
        time.sleep(window)
        completed_after = int(
            records.scalar("SELECT count(*) FROM ingestion_cycles WHERE status = 'completed'")
        )
        commands = _delta(command_counts(broker), before)
        bursts = int(records.scalar("SELECT count(*) FROM ingestion_bursts"))
    finally:
        if beat is not None:
            beat.terminate()
            beat.wait(timeout=30)
        worker.stop()
        records.close()
    log = worker.log()
    ticks = [(float(s), int(n)) for s, n in _TICK_LINE.findall(log)]
    skipped = log.count("skipped ")
    return ManyRun(
        providers=count,
        cap=cap,
        first_cycles=done,
        first_seconds=first_seconds,
        progress=progress,
        cycles_per_minute=(completed_after - completed_before) * 60.0 / window,
        window=window,
        ticks=ticks,
        bursts=bursts,
        commands=commands,
        skipped=skipped,
    )


def _start_beat(workdir: Path, worker: Worker) -> subprocess.Popen[bytes]:
    env = worker.env()
    log = open(workdir / f"{worker.name}-beat.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.worker",
            "beat",
            "--loglevel=INFO",
            f"--schedule={workdir / (worker.name + '-beat-schedule')}",
        ],
        cwd=ROOT,
        env={**_clean_env(), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc


# -- the reconciler's tick ----------------------------------------------------------------


@dataclass(frozen=True)
class Ticks:
    providers: int
    idle: list[float]  # seconds per idle tick
    idle_statements: int
    announcing: list[float]  # seconds per tick announcing ``due`` steps
    announcing_statements: int
    due: int
    announced: list[int]


def ticks(config: Config) -> Ticks:
    """The reconciler's tick at 10,000 providers, in this process, against a Redis of its own."""
    from bench.app import build
    from ingestion import Settings
    from ingestion.store import models as m

    count = max(10, round(TICK_PROVIDERS * min(1.0, config.scale * 10)))
    due = max(1, count // 10)
    db = config.postgres().create()
    try:
        with throwaway_redis(config.workdir) as broker:
            settings = Settings(
                database_url=db.url,
                broker_url=broker,
                queue=f"ingestion-ticks-{uuid.uuid4().hex[:6]}",
            )
            specs = [{"name": f"tick-{i:05d}", "count": 100} for i in range(count)]
            ingestion = build(settings, specs)
            ingestion.register_providers()
            engine = ingestion.store.db.sql_engine
            statements: list[str] = []

            def count_statement(*args: Any) -> None:
                statements.append(args[2])

            p = m.providers.c
            idle: list[float] = []
            announcing: list[float] = []
            announced: list[int] = []
            idle_statements = announcing_statements = 0
            client = redis.Redis.from_url(broker)
            try:
                for _ in range(5):
                    with engine.begin() as conn:  # nothing due
                        conn.execute(
                            update(m.providers).values(due_at=text("now() + interval '1 day'"))
                        )
                    statements.clear()
                    event.listen(engine, "before_cursor_execute", count_statement)
                    started = time.perf_counter()
                    ingestion.reconcile()
                    idle.append(time.perf_counter() - started)
                    event.remove(engine, "before_cursor_execute", count_statement)
                    idle_statements = len(statements)
                    with engine.begin() as conn:  # ``due`` steps due, never announced
                        conn.execute(
                            update(m.providers)
                            .where(p.name.in_([f"tick-{i:05d}" for i in range(due)]))
                            .values(due_at=text("now() - interval '1 second'"), sent_at=None)
                        )
                    statements.clear()
                    event.listen(engine, "before_cursor_execute", count_statement)
                    started = time.perf_counter()
                    announced.append(len(ingestion.reconcile()))
                    announcing.append(time.perf_counter() - started)
                    event.remove(engine, "before_cursor_execute", count_statement)
                    announcing_statements = len(statements)
                    client.delete(settings.queue)
            finally:
                client.close()
                ingestion.store.dispose()
    finally:
        db.drop()
    return Ticks(count, idle, idle_statements, announcing, announcing_statements, due, announced)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
