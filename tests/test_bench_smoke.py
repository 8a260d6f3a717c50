"""The benchmarks at a tiny size: each one runs end to end and gives sane numbers.

These never assert a speed (``make bench`` measures); they keep the benchmarks from rotting.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import figures
from bench.figures import Config
from bench.profile import categorize, profile
from bench.report import Results, render
from tests.support.paths import PG_ADMIN_DSN, PG_HOST, REDIS_URL, ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.workers]

SCALE = 0.005  # 1,000 entities for the throughput figures


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        tmp_path,
        scale=SCALE,
        repeats=1,
        pg_admin_dsn=PG_ADMIN_DSN,
        pg_host=PG_HOST,
        database=f"ingestion_bench_smoke_{os.getpid()}",
        redis_url=f"{REDIS_URL}/12",
    )


def sane_rate(value: float) -> bool:
    return math.isfinite(value) and value > 0


def rendered(config: Config, **figure: object) -> str:
    return render(Results(config, datetime.now(UTC), 1.0, **figure))  # type: ignore[arg-type]


def test_throughput_and_unchanged_cycles_are_measured_against_the_raw_write(
    config: Config,
) -> None:
    result = figures.throughput(config)

    assert result.entities == 1000
    [run] = result.runs
    assert all(sane_rate(v) for v in (run.first, run.unchanged, run.raw))
    assert run.first == pytest.approx(1000 / run.first_seconds)
    assert sane_rate(result.ratio) and sane_rate(result.unchanged_ratio)
    # Every entity's body (about 1 KB) goes through the WAL once in the first cycle.
    assert run.first_wal > 1000 and run.unchanged_wal > 0 and run.catalog_bytes > 1000
    doc = rendered(config, throughput=result)
    assert "## 1. Throughput" in doc and "| 1 | Throughput" in doc
    assert "WAL written per entity" in doc


def test_memory_peaks_are_read_for_each_size(config: Config) -> None:
    result = figures.memory(config)

    assert [r.entities for r in result.runs] == [50, 500, 5000]
    for run in result.runs:
        assert 10 * 2**20 < run.pool_peak < 2 * 2**30
        assert 10 * 2**20 < run.main_peak < 2 * 2**30
    assert "## 3. Memory" in rendered(config, memory=result)


def test_sweep_removes_the_missing_tenth_on_both_sides(config: Config) -> None:
    result = figures.sweep(config)

    [run] = result.runs
    assert run.removed == 500
    assert run.engine > 0 and run.raw > 0
    assert "## 4. Sweep" in rendered(config, sweep=result)


def test_scheduling_gaps_are_read_from_the_burst_records(config: Config) -> None:
    result = figures.scheduling(config)

    # a gap between each two bursts of a cycle; a burst may take two one-entity pages
    assert result.bursts // 2 - 1 <= len(result.engine_gaps) <= result.bursts - 1
    assert len(result.relay_gaps) == result.bursts - 1
    assert 0 <= result.engine_median < 10
    assert 0 <= result.relay_median < 10
    assert "## 5. Scheduling" in rendered(config, scheduling=result)


def test_embedded_default_is_measured_against_a_raw_sqlite_write(config: Config) -> None:
    result = figures.embedded(config)

    [run] = result.runs
    assert sane_rate(run.engine) and sane_rate(run.raw)
    assert "## 6. The embedded default" in rendered(config, embedded=result)


def test_make_bench_entry_point_writes_the_results_file(config: Config, tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    env = {
        **os.environ,
        "BENCH_SCALE": str(SCALE),
        "BENCH_REPEATS": "1",
        "BENCH_ONLY": "sweep",
        "BENCH_OUTPUT": str(output),
        "BENCH_DATABASE": config.database,
        "BENCH_PG_ADMIN_DSN": config.pg_admin_dsn,
        "BENCH_PG_HOST": config.pg_host,
        "BENCH_REDIS_URL": config.redis_url,
    }

    subprocess.run([sys.executable, "-m", "bench"], cwd=ROOT, env=env, check=True, timeout=100)

    doc = output.read_text()
    assert doc.startswith("# Benchmarks")
    assert "| 4 | Sweep" in doc and "Postgres" in doc


def test_profile_puts_every_sample_of_both_cycles_in_a_category(config: Config) -> None:
    result = profile(config)

    assert result is not None, "py-spy is a dev dependency: make install brings it"
    for breakdown in (result.first, result.unchanged):
        assert breakdown.cycle.entities == result.entities
        assert sum(breakdown.samples.values()) > 0
        assert sum(breakdown.share(c) for c in result.categories()) == pytest.approx(1.0)
    assert result.first.samples["database: statements (driver and server)"] > 0
    assert "## Where the time goes" in rendered(config, profile=result)


def test_profile_counts_the_committer_threads_statements_and_the_burst_waiting_for_them() -> None:
    committer = [
        "Thread._bootstrap (/usr/lib/python3.11/threading.py:1002)",
        "_WorkItem.run (/usr/lib/python3.11/concurrent/futures/thread.py:58)",
        "Store.commit_page (/src/ingestion/store/store.py:113)",
        "Connection.execute (/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py:1494)",
        "PGDialect.do_execute (/venv/lib/python3.11/site-packages/sqlalchemy/engine/default.py:9)",
    ]
    waiting = [
        "Engine.run_step (/src/ingestion/engine.py:129)",
        "_BurstRun._settle (/src/ingestion/engine.py:496)",
        "Future.result (/usr/lib/python3.11/concurrent/futures/_base.py:451)",
        "Condition.wait (/usr/lib/python3.11/threading.py:327)",
    ]
    idle_pool_thread = [
        *committer[:2],
        "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83)",
    ]

    assert categorize(committer) == "database: statements (driver and server)"
    assert categorize(waiting) == "burst thread waiting for the page in flight"
    assert categorize(idle_pool_thread) is None
