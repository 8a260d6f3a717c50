"""Render the results as the Markdown of ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import psycopg2
import redis

from bench.figures import (
    MEMORY,
    SWEEP_LEFT,
    Config,
    Embedded,
    Memory,
    Overlap,
    Scheduling,
    Sweep,
    Throughput,
    median,
)
from bench.profile import RATE, Profile
from bench.scale import MANY_ENTITIES, MANY_PAGE, MANY_REST, Many, ScaleOut, Ticks
from ingestion.settings import EMBEDDED_BROKER

MIB = 1024 * 1024

TARGET_THROUGHPUT = 0.6
TARGET_UNCHANGED = 3.0
TARGET_OVERLAP = 1.15
TARGET_MEMORY_MIB = 16
TARGET_SWEEP = 2.0
TARGET_GAP_MS = 25.0


@dataclass(frozen=True)
class Results:
    config: Config
    started: datetime
    seconds: float
    throughput: Throughput | None = None
    memory: Memory | None = None
    sweep: Sweep | None = None
    scheduling: Scheduling | None = None
    embedded: Embedded | None = None
    profile: Profile | None = None
    overlap: Overlap | None = None
    ticks: Ticks | None = None
    scaleout: ScaleOut | None = None
    providers: Many | None = None


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _list(values: list[float], fmt: str = "{:,.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def machine(config: Config) -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    conn = psycopg2.connect(config.pg_admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            pg = cur.fetchone()[0]
    finally:
        conn.close()
    client = redis.Redis.from_url(config.redis_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("celery", "kombu", "sqlalchemy", "psycopg2-binary")
    )
    return [
        f"| CPU | {cpu}, {os.cpu_count()} cores |",
        f"| Memory | {mem_kib / 1024 / 1024:.1f} GiB |",
        f"| OS | {platform.system()} {platform.release()} |",
        f"| Python | {platform.python_version()} |",
        f"| Packages | {packages} |",
        f"| Postgres | {pg} |",
        f"| Redis | {redis_version} |",
        f"| SQLite | {sqlite3.sqlite_version} |",
        f"| Commit | {commit or 'unknown'} |",
    ]


def _summary(results: Results) -> list[str]:
    rows: list[str] = []
    t, mem, sw, sc, em = (
        results.throughput,
        results.memory,
        results.sweep,
        results.scheduling,
        results.embedded,
    )
    if t:
        rows.append(
            f"| 1 | Throughput, first cycle / raw write limit | {t.ratio:.2f} | "
            f">= {TARGET_THROUGHPUT} | {_met(t.ratio >= TARGET_THROUGHPUT)} |"
        )
        rows.append(
            f"| 2 | Unchanged re-ingestion / first cycle | {t.unchanged_ratio:.2f} | "
            f">= {TARGET_UNCHANGED:g} | {_met(t.unchanged_ratio >= TARGET_UNCHANGED)} |"
        )
    if mem:
        growth = mem.growth / MIB
        rows.append(
            f"| 3 | Peak RSS, {mem.runs[-1].entities:,} - {mem.runs[0].entities:,} entities | "
            f"{growth:+.1f} MiB | <= {TARGET_MEMORY_MIB} MiB | "
            f"{_met(growth <= TARGET_MEMORY_MIB)} |"
        )
    if sw:
        rows.append(
            f"| 4 | Sweep / raw anti-join DELETE | {sw.ratio:.2f} | <= {TARGET_SWEEP:g} | "
            f"{_met(sw.ratio <= TARGET_SWEEP)} |"
        )
    if sc:
        gap = sc.engine_median * 1000
        rows.append(
            f"| 5 | Gap between bursts (median) | {gap:.1f} ms | <= {TARGET_GAP_MS:g} ms | "
            f"{_met(gap <= TARGET_GAP_MS)} |"
        )
    if em:
        rows.append(
            f"| 6 | Embedded (SQLite, file broker) / raw SQLite write | {em.ratio:.2f} | "
            "reported | |"
        )
    ov = results.overlap
    if ov:
        met = _met(ov.ratio <= TARGET_OVERLAP)
        rows.append(
            f"| 7 | Slow source ({ov.latency * 1000:g} ms a page) / max(source alone, engine "
            f"alone) | {ov.ratio:.2f} | <= {TARGET_OVERLAP:g} | {met} |"
        )
    return rows


def render(results: Results, notes: str = "") -> str:
    c = results.config
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {results.started:%Y-%m-%d %H:%M} UTC in "
        f"{results.seconds / 60:.1f} minutes: scale {c.scale:g} (`BENCH_SCALE`), "
        f"{c.repeats} repeats (`BENCH_REPEATS`). Every figure is set against a baseline "
        "measured in the same run, and a ratio is the median of the per-repeat ratios: the "
        "machine is shared, so absolute numbers move from run to run more than ratios do.",
        "",
        "| Machine | |",
        "| --- | --- |",
        *machine(c),
        "",
        "## Summary",
        "",
        "| # | Figure | Result | Target | |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += _summary(results)
    t, mem, sw, sc, em = (
        results.throughput,
        results.memory,
        results.sweep,
        results.scheduling,
        results.embedded,
    )
    out.append("")
    if t:
        out += _throughput(t)
    if mem:
        out += _memory(mem)
    if sw:
        out += _sweep(sw)
    if sc:
        out += _scheduling(sc)
    if em:
        out += _embedded(em)
    if results.overlap:
        out += _overlap(results.overlap)
    if results.profile:
        out += _profile(results.profile)
    if results.ticks or results.scaleout or results.providers:
        out += scale_section(results.ticks, results.scaleout, results.providers)
    out += _method(c)
    if notes:
        out += ["", notes.strip()]
    return "\n".join(out) + "\n"


def _throughput(t: Throughput) -> list[str]:
    first = [r.first for r in t.runs]
    again = [r.unchanged for r in t.runs]
    raw = [r.raw for r in t.runs]
    return [
        "## 1. Throughput and 2. unchanged re-ingestion (Postgres, Redis, one worker)",
        "",
        f"{t.entities:,} entities of about 1 KB, pages of 500, one cycle through a real worker; "
        "then a second cycle over the same, unchanged source. The raw write limit is the same "
        "rows written by `COPY` into a staging table and one `INSERT ... ON CONFLICT DO "
        "UPDATE`, in one transaction.",
        "",
        "| | entities/s (median) | each repeat | seconds (each repeat) |",
        "| --- | --- | --- | --- |",
        f"| Raw write limit | {_rate(median(raw))} | {_list(raw)} | "
        f"{_list([r.raw_seconds for r in t.runs], '{:.1f}')} |",
        f"| Engine, first cycle | {_rate(median(first))} | {_list(first)} | "
        f"{_list([r.first_seconds for r in t.runs], '{:.1f}')} |",
        f"| Engine, unchanged cycle | {_rate(median(again))} | {_list(again)} | "
        f"{_list([r.unchanged_seconds for r in t.runs], '{:.1f}')} |",
        "",
        f"- first cycle / raw: **{t.ratio:.2f}** (each repeat: "
        f"{_list([r.first / r.raw for r in t.runs], '{:.2f}')})",
        f"- unchanged / first cycle: **{t.unchanged_ratio:.2f}** (each repeat: "
        f"{_list([r.unchanged / r.first for r in t.runs], '{:.2f}')}); unchanged / raw: "
        f"{median([r.unchanged / r.raw for r in t.runs]):.2f}",
        f"- WAL written per entity: first cycle {_list([r.first_wal for r in t.runs], '{:,.0f}')} "
        f"bytes, unchanged cycle {_list([r.unchanged_wal for r in t.runs], '{:,.0f}')} bytes; "
        f"the catalog on disk after both: "
        f"{_list([r.catalog_bytes for r in t.runs], '{:,.0f}')} bytes per entity",
        "",
    ]


def _overlap(ov: Overlap) -> list[str]:
    engine = [r.engine for r in ov.runs]
    source = [r.source for r in ov.runs]
    slow = [r.slow for r in ov.runs]
    ratios = [r.slow / max(r.engine, r.source) for r in ov.runs]
    serial = median([(r.engine + r.source) / max(r.engine, r.source) for r in ov.runs])
    return [
        "## 7. Overlap of the source and the writes (Postgres, Redis, one worker)",
        "",
        f"A first cycle of {ov.entities:,} entities (pages of 500) over a source whose pages "
        f"take {ov.latency * 1000:g} ms each (a sleep before the page is made, like an HTTP "
        "API's latency), against two baselines measured in the same repeat: the engine alone "
        "(a first cycle over the instant source) and the source alone (every page read in a "
        "loop, nothing written).",
        "",
        "| | seconds (median) | each repeat |",
        "| --- | --- | --- |",
        f"| Source alone | {median(source):.2f} | {_list(source, '{:.2f}')} |",
        f"| Engine alone (instant source) | {median(engine):.2f} | {_list(engine, '{:.2f}')} |",
        f"| Engine with the slow source | {median(slow):.2f} | {_list(slow, '{:.2f}')} |",
        "",
        f"- slow source / max(source, engine): **{ov.ratio:.2f}** (each repeat: "
        f"{_list(ratios, '{:.2f}')}); one after the other, the two would take {serial:.2f}",
        "",
    ]


def _memory(mem: Memory) -> list[str]:
    base = mem.runs[0].pool_peak
    rows = [
        f"| {r.entities:,} | {r.pool_peak / MIB:.1f} | {(r.pool_peak - base) / MIB:+.1f} | "
        f"{r.main_peak / MIB:.1f} | {r.seconds:.1f} |"
        for r in mem.runs
    ]
    sizes = ", ".join(f"{n:,}" for n in MEMORY)
    return [
        "## 3. Memory",
        "",
        f"Peak RSS (`VmHWM`) of a fresh worker over one cycle of each size ({sizes} "
        "times the scale). The pool process runs the bursts; the main process only receives "
        "messages. One run per size: a peak is not a rate and does not move with the load of "
        "the machine.",
        "",
        "| entities | pool process peak (MiB) | against the smallest | main process peak (MiB) "
        "| cycle seconds |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def _sweep(sw: Sweep) -> list[str]:
    return [
        "## 4. Sweep",
        "",
        f"{sw.entities:,} entities of about 1 KB owned by one provider, one in {SWEEP_LEFT} "
        f"not marked by the completed cycle ({sw.runs[0].removed:,} removed). The engine's "
        "time is the whole `finish_burst(done=True)` transaction (counts for the guards, "
        "delete, cycle closed, next step scheduled). The raw time is `DELETE ... WHERE NOT "
        "EXISTS` against a marks table holding the refs the cycle saw, over a copy of the "
        "same rows with the same indexes.",
        "",
        "| | seconds (median) | each repeat |",
        "| --- | --- | --- |",
        f"| Raw anti-join DELETE | {median([r.raw for r in sw.runs]):.2f} | "
        f"{_list([r.raw for r in sw.runs], '{:.2f}')} |",
        f"| Engine sweep | {median([r.engine for r in sw.runs]):.2f} | "
        f"{_list([r.engine for r in sw.runs], '{:.2f}')} |",
        "",
        f"- engine / raw: **{sw.ratio:.2f}** (each repeat: "
        f"{_list([r.engine / r.raw for r in sw.runs], '{:.2f}')})",
        "",
    ]


def _scheduling(sc: Scheduling) -> list[str]:
    def pct(values: list[float], q: int) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000

    return [
        "## 5. Scheduling overhead (Redis)",
        "",
        f"`burst_interval` 0, pages of one entity and a `burst_length` of 1 ms, so each of the "
        f"{sc.bursts} bursts of a cycle commits one page. The gap is the next burst's "
        "`started_at` minus the previous one's `ended_at` in `ingestion_bursts` (database "
        "clock). The baseline is a bare Celery task on the same worker and broker that sends "
        "the next one: the floor of any task-per-step design.",
        "",
        "| | median (ms) | p90 (ms) | max (ms) | gaps |",
        "| --- | --- | --- | --- | --- |",
        f"| Bare task relay | {sc.relay_median * 1000:.1f} | {pct(sc.relay_gaps, 90):.1f} | "
        f"{max(sc.relay_gaps) * 1000:.1f} | {len(sc.relay_gaps)} |",
        f"| Engine, burst to burst | {sc.engine_median * 1000:.1f} | "
        f"{pct(sc.engine_gaps, 90):.1f} | {max(sc.engine_gaps) * 1000:.1f} | "
        f"{len(sc.engine_gaps)} |",
        "",
        f"- engine / relay: {sc.engine_median / sc.relay_median:.2f}",
        "",
    ]


def _embedded(em: Embedded) -> list[str]:
    engine = [r.engine for r in em.runs]
    raw = [r.raw for r in em.runs]
    return [
        "## 6. The embedded default (SQLite, file broker)",
        "",
        f"Figure 1 with `sqlite:///` and `{EMBEDDED_BROKER}`: {em.entities:,} entities through a "
        "real worker. The baseline is the same rows written into a fresh database of the same "
        "schema by one `executemany` of `INSERT ... ON CONFLICT DO UPDATE` in one transaction.",
        "",
        "| | entities/s (median) | each repeat |",
        "| --- | --- | --- |",
        f"| Raw SQLite write | {_rate(median(raw))} | {_list(raw)} |",
        f"| Engine, first cycle | {_rate(median(engine))} | {_list(engine)} |",
        "",
        f"- engine / raw: **{em.ratio:.2f}**",
        "",
    ]


def _profile(p: Profile) -> list[str]:
    rows = [
        f"| {category} | {100 * p.first.share(category):.1f}% | "
        f"{p.first.per_entity_us(category):.1f} | {100 * p.unchanged.share(category):.1f}% | "
        f"{p.unchanged.per_entity_us(category):.1f} |"
        for category in p.categories()
    ]
    return [
        "## Where the time goes (py-spy)",
        "",
        f"The pool process of a worker sampled with `py-spy record --idle` ({RATE} Hz) over a "
        f"first cycle and an unchanged cycle of {p.entities:,} entities (Postgres, Redis). "
        "Wall time, so waiting for Postgres counts, under the statement that waited. Only "
        "samples inside a burst count (the gaps between bursts are figure 5); each goes to "
        "the first category that matches a frame, innermost first, and a category's time per "
        "entity is its share of the samples times the cycle's time.",
        "",
        "| | first cycle | µs/entity | unchanged cycle | µs/entity |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        f"| total | {p.first.cycle.seconds:.1f} s | "
        f"{p.first.cycle.seconds / p.entities * 1e6:.1f} | {p.unchanged.cycle.seconds:.1f} s | "
        f"{p.unchanged.cycle.seconds / p.entities * 1e6:.1f} |",
        "",
    ]


def _method(c: Config) -> list[str]:
    return [
        "## How to run, and what is measured",
        "",
        "`make bench` starts Postgres and Redis like `make test`, creates the database "
        f"`{c.database}` and drops it at the end, and rewrites this file. `BENCH_SCALE` "
        "multiplies every size (default 1: 200,000 entities for figures 1, 2 and 6, 10k/100k/1M "
        "for figure 3, 1M for figure 4), `BENCH_REPEATS` sets the repeats (default 3), "
        "`BENCH_ONLY` picks figures (e.g. `throughput,sweep`; `profile` is the py-spy "
        "breakdown, skipped when py-spy is not installed; `ticks`, `scaleout` and `providers` the "
        "Scale-out section, each capped in time). A tiny version of every figure "
        "runs in `make test` (`tests/test_bench_smoke.py`): it checks that the benchmark runs "
        "and gives sane numbers, never a speed.",
        "",
        "- The source lives in the worker (`bench/source.py`): entities are generated from "
        "their number, about 1 KB of canonical JSON each, pages of 500; it is not the "
        "bottleneck.",
        "- The workers are real `celery worker` processes (prefork, one pool process) running "
        "`bench/worker.py`; cycle times come from the engine's own records (`ingestion_cycles`, "
        "database clock), from the claim of the first burst to the end of the last one.",
        "- The raw rows are made before the clock starts: the raw figure is the write alone.",
    ]


def scale_section(ticks: Ticks | None, so: ScaleOut | None, many: Many | None) -> list[str]:
    """``## Scale-out``: more pool processes, thousands of providers, the reconciler's tick."""
    out = ["## Scale-out", ""]
    if so:
        base = so.runs[0].rate
        out += [
            f"{so.providers} providers of {so.per_provider:,} entities (about 1 KB, pages of "
            "500, `burst_interval` 0), one worker with 1, 2 and 4 pool processes (`-c`), "
            "Postgres and Redis on the same 2-core machine. Entities/s is every entity of "
            "the 8 first cycles over the time from the first claim to the last cycle's end.",
            "",
            "| pool processes | entities/s | against one | seconds |",
            "| --- | --- | --- | --- |",
            *[
                f"| {r.processes} | {_rate(r.rate)} | {r.rate / base:.2f} | {r.seconds:.1f} |"
                for r in so.runs
            ],
            "",
        ]
    if many:
        out += [
            f"Providers of {MANY_ENTITIES} entities each (pages of {MANY_PAGE}, rest "
            f"{MANY_REST:g} s, the other options default) listed in a YAML file the worker "
            "loads; one worker with two pool processes, Celery beat with the default "
            "reconciler interval (5 s), and a Redis server of the run's own, so that its "
            "`INFO commandstats` count the run's commands alone (every command of the run, "
            "beat, reconciler and idle polling included, over the bursts the run recorded). "
            "Each run is capped; a run that did not complete every first cycle in its cap "
            "says how many it did.",
            "",
            "| providers | first cycles completed | time to all first cycles | cycles/min "
            "after | reconciler ticks | tick median (max) | steps announced per tick, max "
            "| bursts | stale or duplicate skips | Redis commands per burst |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in many.runs:
            times = [t for t, _ in r.ticks]
            first = f"{r.first_seconds:.0f} s" if r.first_seconds else f"not within {r.cap:.0f} s"
            tick = f"{median(times) * 1000:.0f} ms ({max(times) * 1000:.0f} ms)" if times else "-"
            out.append(
                f"| {r.providers:,} | {r.first_cycles:,} | {first} | "
                f"{r.cycles_per_minute:,.0f} (over {r.window:.0f} s) | {len(r.ticks)} | {tick} | "
                f"{max((n for _, n in r.ticks), default=0):,} | {r.bursts:,} | {r.skipped:,} | "
                f"{r.commands_per_burst:.1f} |"
            )
        out.append("")
        for r in many.runs:
            top = sorted(r.commands.items(), key=lambda kv: -kv[1])[:8]
            listed = ", ".join(f"{k} {v / max(1, r.bursts):.1f}" for k, v in top)
            every = max(1, len(r.progress) // 8)
            steps = ", ".join(f"{s:.0f} s: {n:,}" for s, n in r.progress[::every])
            out.append(
                f"- {r.providers:,} providers: per burst {listed}; first cycles done by {steps}"
            )
        out.append("")
    if ticks:
        out += [
            f"The reconciler's tick in one process at {ticks.providers:,} registered providers "
            f"(Postgres, a Redis of its own), five times each: idle (nothing due), and "
            f"announcing {ticks.due:,} due steps; statements counted with SQLAlchemy's "
            "`before_cursor_execute`.",
            "",
            "| tick | median (ms) | each (ms) | statements |",
            "| --- | --- | --- | --- |",
            f"| idle | {median(ticks.idle) * 1000:.1f} | "
            f"{_list([t * 1000 for t in ticks.idle], '{:.1f}')} | {ticks.idle_statements} |",
            f"| announcing {ticks.due:,} | {median(ticks.announcing) * 1000:.0f} | "
            f"{_list([t * 1000 for t in ticks.announcing], '{:.0f}')} | "
            f"{ticks.announcing_statements} |",
            "",
        ]
    return out
