"""The six figures of the benchmark, each against a baseline measured in the same run.

Every function takes a :class:`Config` and returns a result that :mod:`bench.report` renders.
Sizes are the issue's sizes times ``Config.scale``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from bench.app import RELAY
from bench.harness import BenchError, Postgres, Records, Worker
from bench.source import PAGE_SIZE, BenchProvider, bench_entity
from ingestion.entities import prepare
from ingestion.options import ProviderOptions
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import Store

THROUGHPUT = 200_000
MEMORY = (10_000, 100_000, 1_000_000)
SWEEP = 1_000_000
SWEEP_LEFT = 10  # one entity in SWEEP_LEFT has left the source
SCHEDULING_BURSTS = 60
OVERLAP_LATENCY = 0.020  # seconds a page of the slow source takes, like an HTTP API's
REST = 86_400  # seconds: a provider rests between the cycles a benchmark starts itself
# The raw writers' table: every column the engine writes for an entity, body included, in one
# row with the catalog's indexes (the engine keeps the body in a table of its own; the raw limit
# stays the plainest way to store the same data).
COLUMNS = "ref, provider, location_key, entity, hash, mark_cycle, created_at, updated_at"


def raw_table(name: str, body: str = "jsonb", *, keys: bool = True) -> list[str]:
    """The statements that create the raw writers' table ``name`` (``body``: the body's type;
    without ``keys``, the table alone, its primary key and index left to be built later)."""
    table = (
        f"CREATE TABLE {name} (ref varchar(512){' PRIMARY KEY' if keys else ''}, "
        "provider varchar(255) NOT NULL, "
        f"location_key text, entity {body} NOT NULL, hash varchar(64) NOT NULL, "
        "hash_version smallint NOT NULL DEFAULT 1, mark_cycle bigint NOT NULL, "
        "created_at timestamp with time zone NOT NULL, "
        "updated_at timestamp with time zone NOT NULL)"
    )
    if not keys:
        return [table]
    return [table, f"CREATE INDEX {name}_provider_ref ON {name} (provider, ref)"]


@dataclass(frozen=True)
class Config:
    """Where and how big: sizes are the issue's sizes times ``scale``."""

    workdir: Path
    scale: float = 1.0
    repeats: int = 3
    pg_admin_dsn: str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    pg_host: str = "postgresql+psycopg2://postgres@127.0.0.1:5432"
    database: str = "ingestion_bench"
    redis_url: str = "redis://127.0.0.1:6379/12"

    def size(self, n: int) -> int:
        return max(10, round(n * self.scale))

    def postgres(self) -> Postgres:
        return Postgres(self.database, self.pg_admin_dsn, self.pg_host)

    def timeout(self, entities: int) -> float:
        """How long one cycle of ``entities`` may take before the benchmark gives up."""
        return 120.0 + entities / 200


def median(values: list[float]) -> float:
    return statistics.median(values)


def _throughput_spec(name: str, count: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    return {
        "name": name,
        "count": count,
        "page_size": page_size,
        "options": {"burst_interval": 0, "rest_length": REST},
    }


# -- the raw limit ------------------------------------------------------------------------


def _copy_field(value: str) -> str:
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(char, escaped)
    return value


def write_rows(path: Path, provider: str, count: int) -> Path:
    """The rows the engine writes for ``count`` entities, in COPY text format (not timed)."""
    stamp = "2026-01-01 00:00:00+00"
    location = f"bench:{provider}"
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            item = prepare(bench_entity(n), provider, location)
            out.write(
                "\t".join(
                    (
                        _copy_field(item.ref),
                        provider,
                        location,
                        _copy_field(item.canonical),
                        item.hash,
                        "1",
                        stamp,
                        stamp,
                    )
                )
                + "\n"
            )
    return path


def raw_postgres_write(db: Postgres, rows: Path) -> float:
    """COPY the rows into a staging table, then INSERT ... ON CONFLICT DO UPDATE: seconds."""
    db.execute(
        "DROP TABLE IF EXISTS bench_raw_entities",
        *raw_table("bench_raw_entities"),
        "CHECKPOINT",
    )
    conn = db.connect()
    try:
        started = time.perf_counter()
        with conn.cursor() as cur, rows.open("r", encoding="utf-8") as data:
            cur.execute(
                "CREATE TEMP TABLE bench_staging (LIKE bench_raw_entities INCLUDING DEFAULTS) "
                "ON COMMIT DROP"
            )
            cur.copy_expert(f"COPY bench_staging ({COLUMNS}) FROM STDIN", data)
            cur.execute(
                f"INSERT INTO bench_raw_entities ({COLUMNS}) SELECT {COLUMNS} FROM bench_staging "
                "ON CONFLICT (ref) DO UPDATE SET provider = EXCLUDED.provider, "
                "location_key = EXCLUDED.location_key, entity = EXCLUDED.entity, "
                "hash = EXCLUDED.hash, mark_cycle = EXCLUDED.mark_cycle, "
                "updated_at = EXCLUDED.updated_at"
            )
        conn.commit()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    db.execute("DROP TABLE bench_raw_entities")
    return seconds


def _sqlite_rows(rows: Path) -> Iterator[list[str]]:
    with rows.open("r", encoding="utf-8") as data:
        for line in data:
            yield line.rstrip("\n").split("\t")


def raw_sqlite_write(path: Path, rows: Path) -> float:
    """One transaction of INSERT ... ON CONFLICT DO UPDATE (executemany) on SQLite: seconds."""
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        started = time.perf_counter()
        for statement in raw_table("bench_raw_entities", body="text"):
            conn.execute(statement)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO bench_raw_entities ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET provider = excluded.provider, "
            "location_key = excluded.location_key, entity = excluded.entity, "
            "hash = excluded.hash, mark_cycle = excluded.mark_cycle, "
            "updated_at = excluded.updated_at",
            _sqlite_rows(rows),
        )
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


# -- 1 and 2: throughput and unchanged re-ingestion ---------------------------------------


@dataclass(frozen=True)
class ThroughputRun:
    first: float  # entities per second, first cycle (every entity new)
    unchanged: float  # entities per second, second cycle over the same source
    raw: float  # entities per second, COPY + INSERT ... ON CONFLICT
    first_seconds: float
    unchanged_seconds: float
    raw_seconds: float
    first_wal: float  # bytes of WAL per entity, first cycle
    unchanged_wal: float  # bytes of WAL per entity, unchanged cycle
    catalog_bytes: float  # the catalog's tables and indexes on disk per entity, after both


@dataclass(frozen=True)
class Throughput:
    entities: int
    runs: list[ThroughputRun]

    @property
    def ratio(self) -> float:
        """First cycle against the raw limit (median of each run's ratio)."""
        return median([r.first / r.raw for r in self.runs])

    @property
    def unchanged_ratio(self) -> float:
        """Unchanged cycle against the first cycle (median of each run's ratio)."""
        return median([r.unchanged / r.first for r in self.runs])


def throughput(config: Config) -> Throughput:
    """Figures 1 and 2 on Postgres and Redis, through a real worker."""
    count = config.size(THROUGHPUT)
    rows = write_rows(config.workdir / "throughput.rows", "throughput", count)
    db = config.postgres().create()
    runs: list[ThroughputRun] = []
    try:
        for _ in range(config.repeats):
            db.empty()
            raw_seconds = raw_postgres_write(db, rows)
            db.execute("CHECKPOINT")
            cycles = _engine_two_cycles(config, db, count)
            runs.append(
                ThroughputRun(
                    first=cycles.first.rate,
                    unchanged=cycles.second.rate,
                    raw=count / raw_seconds,
                    first_seconds=cycles.first.seconds,
                    unchanged_seconds=cycles.second.seconds,
                    raw_seconds=raw_seconds,
                    first_wal=cycles.first_wal / count,
                    unchanged_wal=cycles.second_wal / count,
                    catalog_bytes=cycles.catalog_bytes / count,
                )
            )
    finally:
        rows.unlink(missing_ok=True)
        db.drop()
    return Throughput(count, runs)


@dataclass(frozen=True)
class TwoCycles:
    first: Any
    second: Any
    first_wal: int  # bytes of WAL the database wrote during each cycle
    second_wal: int
    catalog_bytes: int  # the catalog's tables with their indexes and TOAST, after both


# Every catalog table an entity has rows in, whatever the schema's revision.
_CATALOG_BYTES = (
    "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint "
    "FROM unnest(ARRAY['catalog_entities', 'catalog_bodies']) AS t"
)
_WAL_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"


def _engine_two_cycles(config: Config, db: Postgres, count: int) -> TwoCycles:
    """Two cycles of one worker, each begun right after a checkpoint, as a long cycle of a
    large catalog is in production: the WAL then holds each table page the cycle changes
    once whole (a full-page image), and a cycle that rewrites every row shows it."""
    records = Records(db.url)
    spec = _throughput_spec("throughput", count)
    try:
        start = int(records.scalar(_WAL_POSITION))
        with Worker(config.workdir, db.url, config.redis_url, [spec]) as worker:
            first = records.wait_cycle("throughput", timeout=config.timeout(count))
            _check_cycle(first, count, written=count)
            db.execute("CHECKPOINT")
            between = int(records.scalar(_WAL_POSITION))
            worker.start_cycle("throughput")
            second = records.wait_cycle(
                "throughput", after=first.cycle_id, timeout=config.timeout(count)
            )
            _check_cycle(second, count, written=0)
            end = int(records.scalar(_WAL_POSITION))
        size = int(records.scalar(_CATALOG_BYTES))
    finally:
        records.close()
    return TwoCycles(first, second, between - start, end - between, size)


def _check_cycle(cycle: Any, entities: int, *, written: int) -> None:
    if cycle.entities != entities or cycle.written != written:
        raise BenchError(
            f"cycle {cycle.cycle_id} marked {cycle.entities} and wrote {cycle.written} "
            f"entities, expected {entities} and {written}"
        )


# -- 7: overlap of the source and the writes ----------------------------------------------


@dataclass(frozen=True)
class OverlapRun:
    engine: float  # seconds: a first cycle with an instant source (the engine alone)
    source: float  # seconds: the slow source alone, every page read in a loop
    slow: float  # seconds: a first cycle with the slow source


@dataclass(frozen=True)
class Overlap:
    entities: int
    latency: float
    runs: list[OverlapRun]

    @property
    def ratio(self) -> float:
        """The slow-source cycle against the larger of its two baselines (median)."""
        return median([r.slow / max(r.engine, r.source) for r in self.runs])


def overlap(config: Config) -> Overlap:
    """Figure 7: a first cycle over a source whose pages take ``OVERLAP_LATENCY`` each,
    against the source alone and the engine alone (an instant source), same run."""
    count = config.size(THROUGHPUT)
    db = config.postgres().create()
    runs: list[OverlapRun] = []
    try:
        for repeat in range(config.repeats):
            source = _source_alone(count, OVERLAP_LATENCY)
            seconds: dict[float, float] = {}
            # Alternate which goes first, so neither always finds the caches warmer.
            for latency in (0.0, OVERLAP_LATENCY)[:: 1 if repeat % 2 == 0 else -1]:
                db.empty()
                db.execute("CHECKPOINT")
                seconds[latency] = _first_cycle(config, db.url, count, latency)
            runs.append(OverlapRun(seconds[0.0], source, seconds[OVERLAP_LATENCY]))
    finally:
        db.drop()
    return Overlap(count, OVERLAP_LATENCY, runs)


def _source_alone(count: int, latency: float) -> float:
    """Seconds to read every page of the bench source with ``latency``, nothing written."""
    provider = BenchProvider("overlap", count, PAGE_SIZE, latency)
    started = time.perf_counter()
    cursor: Any = None
    while True:
        page = provider.next(None, cursor)
        cursor = page.cursor
        if page.done:
            return time.perf_counter() - started


def _first_cycle(config: Config, database_url: str, count: int, latency: float) -> float:
    records = Records(database_url)
    spec = {**_throughput_spec("overlap", count), "latency": latency}
    try:
        with Worker(config.workdir, database_url, config.redis_url, [spec]):
            cycle = records.wait_cycle("overlap", timeout=config.timeout(count))
            _check_cycle(cycle, count, written=count)
    finally:
        records.close()
    return float(cycle.seconds)


# -- 3: memory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRun:
    entities: int
    pool_peak: int  # bytes: the pool process that ran the bursts
    main_peak: int  # bytes: the worker's main process
    seconds: float


@dataclass(frozen=True)
class Memory:
    runs: list[MemoryRun]

    @property
    def growth(self) -> int:
        """Bytes the largest cycle's pool process peaked above the smallest's."""
        return self.runs[-1].pool_peak - self.runs[0].pool_peak


def memory(config: Config) -> Memory:
    """Figure 3: peak RSS of a fresh worker over one cycle of each size."""
    db = config.postgres().create()
    runs: list[MemoryRun] = []
    try:
        for size in MEMORY:
            count = config.size(size)
            db.empty()
            records = Records(db.url)
            spec = _throughput_spec("memory", count)
            try:
                with Worker(config.workdir, db.url, config.redis_url, [spec]) as worker:
                    cycle = records.wait_cycle("memory", timeout=config.timeout(count))
                    _check_cycle(cycle, count, written=count)
                    peaks = worker.peak_rss()
            finally:
                records.close()
            pool = [v for k, v in peaks.items() if k.startswith("pool")]
            runs.append(MemoryRun(count, max(pool), peaks["main"], cycle.seconds))
    finally:
        db.drop()
    return Memory(runs)


# -- 4: sweep -----------------------------------------------------------------------------

_POPULATE = """
INSERT INTO bench_sweep_raw ({columns})
SELECT 'component:default/service-' || lpad(i::text, 8, '0'), %(provider)s,
       'bench:' || %(provider)s,
       jsonb_build_object(
         'apiVersion', 'backstage.io/v1alpha1', 'kind', 'Component',
         'metadata', jsonb_build_object(
           'name', 'service-' || lpad(i::text, 8, '0'),
           'annotations', jsonb_build_object(
             'example.com/source', 'bench',
             'backstage/incremental-entity-provider', %(provider)s)),
         'spec', jsonb_build_object(
           'type', 'service', 'owner', 'team-' || (i %% 17),
           'description', i::text || ' ' || %(description)s)),
       encode(sha256(convert_to(i::text, 'UTF8')), 'hex'),
       CASE WHEN i %% %(left)s = 0 THEN %(old)s ELSE %(cycle)s END,
       now(), now()
FROM generate_series(0, %(count)s - 1) AS i
"""


@dataclass(frozen=True)
class SweepRun:
    engine: float  # seconds: finish_burst(done=True), which sweeps and closes the cycle
    raw: float  # seconds: DELETE ... WHERE NOT EXISTS over a marks table
    removed: int


@dataclass(frozen=True)
class Sweep:
    entities: int
    runs: list[SweepRun]

    @property
    def ratio(self) -> float:
        return median([r.engine / r.raw for r in self.runs])


def sweep(config: Config) -> Sweep:
    """Figure 4: the engine's sweep against a raw anti-join DELETE over the same rows."""
    count = config.size(SWEEP)
    expected = len(range(0, count, SWEEP_LEFT))
    db = config.postgres().create()
    runs: list[SweepRun] = []
    options = ProviderOptions(rest_length=timedelta(seconds=REST))
    lease = timedelta(minutes=30)
    try:
        for repeat in range(config.repeats):
            db.empty()
            db.execute(
                "DROP TABLE IF EXISTS bench_sweep_raw",
                "DROP TABLE IF EXISTS bench_sweep_marks",
            )
            store = Store(db.url)
            store.ensure_providers(["sweep"])
            claim = store.claim("sweep", 1, "bench", lease, options)
            if not hasattr(claim, "cycle_id"):
                raise BenchError(f"could not claim the sweep provider: {claim}")
            _populate_sweep(db, count, claim.cycle_id)
            raw = engine = 0.0
            # Alternate which goes first, so neither always finds the caches warmer.
            for which in ("engine", "raw") if repeat % 2 == 0 else ("raw", "engine"):
                db.execute("CHECKPOINT")
                started = time.perf_counter()
                if which == "engine":
                    _, result = store.finish_burst(claim, done=True, lease=lease, options=options)
                    engine = time.perf_counter() - started
                    removed = result.removed if result else -1
                else:
                    db.execute(
                        "DELETE FROM bench_sweep_raw e WHERE e.provider = 'sweep' AND NOT EXISTS "
                        "(SELECT 1 FROM bench_sweep_marks k WHERE k.ref = e.ref)",
                        autocommit=False,
                    )
                    raw = time.perf_counter() - started
            store.dispose()
            if removed != expected:
                raise BenchError(f"the sweep removed {removed} entities, expected {expected}")
            runs.append(SweepRun(engine, raw, removed))
    finally:
        db.drop()
    return Sweep(count, runs)


def _populate_sweep(db: Postgres, count: int, cycle: int) -> None:
    """``count`` entities of ~1 KB, one in SWEEP_LEFT marked by an older cycle, in the catalog
    and in a plain table of whole rows, with the refs seen this cycle in a marks table."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            # The indexes of the plain table are built after its rows, as the catalog's are.
            (create,) = raw_table("bench_sweep_raw", keys=False)
            cur.execute(create)
            cur.execute(
                _POPULATE.format(columns=COLUMNS),
                {
                    "provider": "sweep",
                    "description": bench_entity(0)["spec"]["description"],
                    "left": SWEEP_LEFT,
                    "old": cycle - 1,
                    "cycle": cycle,
                    "count": count,
                },
            )
            narrow = COLUMNS.replace(" entity,", "")
            cur.execute(
                f"INSERT INTO catalog_entities ({narrow}) SELECT {narrow} FROM bench_sweep_raw"
            )
            cur.execute("INSERT INTO catalog_bodies SELECT ref, entity FROM bench_sweep_raw")
            cur.execute("ALTER TABLE bench_sweep_raw ADD PRIMARY KEY (ref)")
            cur.execute("CREATE INDEX ON bench_sweep_raw (provider, ref)")
            cur.execute("CREATE INDEX ON bench_sweep_raw (provider, mark_cycle)")
            cur.execute(
                "CREATE TABLE bench_sweep_marks AS SELECT ref FROM bench_sweep_raw "
                "WHERE mark_cycle = %s",
                (cycle,),
            )
            cur.execute("ALTER TABLE bench_sweep_marks ADD PRIMARY KEY (ref)")
        conn.commit()
    finally:
        conn.close()
    db.execute(
        "VACUUM ANALYZE catalog_entities",
        "VACUUM ANALYZE catalog_bodies",
        "VACUUM ANALYZE bench_sweep_raw",
        "VACUUM ANALYZE bench_sweep_marks",
    )


# -- 5: scheduling overhead ---------------------------------------------------------------


@dataclass(frozen=True)
class Scheduling:
    bursts: int
    engine_gaps: list[float]  # seconds between one burst's end and the next one's start
    relay_gaps: list[float]  # the same for a bare task that sends the next one

    @property
    def engine_median(self) -> float:
        return median(self.engine_gaps)

    @property
    def relay_median(self) -> float:
        return median(self.relay_gaps)


def scheduling(config: Config) -> Scheduling:
    """Figure 5: the gap between bursts with burst_interval 0 and one-entity pages, on Redis."""
    bursts = max(10, round(SCHEDULING_BURSTS * min(1.0, config.scale * 10)))
    spec = {
        "name": "scheduling",
        "count": bursts,
        "page_size": 1,
        "options": {"burst_interval": 0, "burst_length": 0.001, "rest_length": REST},
    }
    db = config.postgres().create()
    client = redis.Redis.from_url(config.redis_url)
    engine_gaps: list[float] = []
    relay_gaps: list[float] = []
    records = Records(db.url)
    try:
        with Worker(config.workdir, db.url, config.redis_url, [spec]) as worker:
            after = 0
            for repeat in range(config.repeats):
                if repeat:
                    worker.start_cycle("scheduling")
                cycle = records.wait_cycle("scheduling", after=after, timeout=config.timeout(0))
                after = cycle.cycle_id
                times = records.bursts(cycle.cycle_id)
                # One page a burst, mostly: a page read while the one before it commits can
                # join its burst when the clock is checked before that commit ends.
                if not bursts // 2 <= len(times) <= bursts:
                    raise BenchError(
                        f"cycle {after} ran {len(times)} bursts, expected {bursts // 2}-{bursts}"
                    )
                engine_gaps += [
                    (nxt[1] - prev[2]).total_seconds() for prev, nxt in itertools.pairwise(times)
                ]
                key = f"bench-relay-{uuid.uuid4().hex[:8]}"
                worker.send(RELAY, bursts, key)
                hops = _wait_relay(client, key, bursts)
                relay_gaps += [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(hops)]
    finally:
        records.close()
        client.close()
        db.drop()
    return Scheduling(bursts, engine_gaps, relay_gaps)


def _wait_relay(client: redis.Redis, key: str, hops: int) -> list[list[float]]:
    deadline = time.monotonic() + 120
    while client.llen(key) < hops:
        if time.monotonic() > deadline:
            raise BenchError(f"the relay task made {client.llen(key)} of {hops} hops")
        time.sleep(0.1)
    values = [json.loads(v) for v in client.lrange(key, 0, -1)]
    client.delete(key)
    return sorted(values)


# -- 6: the embedded default --------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedRun:
    engine: float  # entities per second
    raw: float  # entities per second, executemany INSERT ... ON CONFLICT in one transaction
    engine_seconds: float
    raw_seconds: float


@dataclass(frozen=True)
class Embedded:
    entities: int
    runs: list[EmbeddedRun] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median([r.engine / r.raw for r in self.runs])


def embedded(config: Config) -> Embedded:
    """Figure 6: figure 1 on SQLite with the file broker, against a raw SQLite write."""
    count = config.size(THROUGHPUT)
    rows = write_rows(config.workdir / "embedded.rows", "throughput", count)
    result = Embedded(count)
    try:
        for repeat in range(config.repeats):
            folder = config.workdir / f"embedded-{repeat}"
            folder.mkdir(parents=True, exist_ok=True)
            raw_seconds = raw_sqlite_write(folder / "raw.db", rows)
            url = f"sqlite:///{folder / 'ingestion.db'}"
            records = Records(url)
            spec = _throughput_spec("throughput", count)
            try:
                with Worker(folder, url, EMBEDDED_BROKER, [spec]):
                    cycle = records.wait_cycle("throughput", timeout=config.timeout(count))
                    _check_cycle(cycle, count, written=count)
            finally:
                records.close()
            result.runs.append(
                EmbeddedRun(cycle.rate, count / raw_seconds, cycle.seconds, raw_seconds)
            )
    finally:
        rows.unlink(missing_ok=True)
    return result
