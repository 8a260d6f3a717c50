"""``python -m bench``: run the benchmarks and write ``docs/benchmarks.md``.

Environment: ``BENCH_SCALE`` (sizes, default 1), ``BENCH_REPEATS`` (default 3), ``BENCH_ONLY``
(comma-separated: throughput, overlap, memory, sweep, scheduling, embedded, profile, ticks,
scaleout, providers), ``BENCH_OUTPUT``
(default docs/benchmarks.md), ``BENCH_NOTES`` (Markdown appended to the output, default
bench/notes.md),
``BENCH_WORKDIR`` (keep the worker logs there), ``BENCH_DATABASE``, ``BENCH_PG_ADMIN_DSN``,
``BENCH_PG_HOST``, ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import figures, scale
from bench.figures import Config
from bench.harness import ROOT
from bench.profile import profile
from bench.report import Results, render

FIGURES = (
    "throughput",
    "overlap",
    "memory",
    "sweep",
    "scheduling",
    "embedded",
    "profile",
    "ticks",
    "scaleout",
    "providers",
)


def config_from_env(workdir: Path) -> Config:
    defaults = Config(workdir)
    return Config(
        workdir=workdir,
        scale=float(os.environ.get("BENCH_SCALE", defaults.scale)),
        repeats=int(os.environ.get("BENCH_REPEATS", defaults.repeats)),
        pg_admin_dsn=os.environ.get("BENCH_PG_ADMIN_DSN", defaults.pg_admin_dsn),
        pg_host=os.environ.get("BENCH_PG_HOST", defaults.pg_host),
        database=os.environ.get("BENCH_DATABASE", defaults.database),
        redis_url=os.environ.get("BENCH_REDIS_URL", defaults.redis_url),
    )


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    only = [f for f in os.environ.get("BENCH_ONLY", ",".join(FIGURES)).split(",") if f]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        print(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
        return 2
    output = Path(os.environ.get("BENCH_OUTPUT", ROOT / "docs" / "benchmarks.md"))
    started, clock = datetime.now(UTC), time.monotonic()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="ingestion-bench-") as tmp:
        config = config_from_env(Path(os.environ.get("BENCH_WORKDIR", tmp)))
        config.workdir.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            if name not in only:
                continue
            print(f"bench: {name} ...", flush=True)
            figure_started = time.monotonic()
            run = profile if name == "profile" else getattr(figures, name, None)
            run = run or getattr(scale, name)
            results[name] = run(config)
            print(f"bench: {name} done in {time.monotonic() - figure_started:.0f}s", flush=True)
        report = Results(config, started, time.monotonic() - clock, **results)  # type: ignore[arg-type]
        notes_file = Path(os.environ.get("BENCH_NOTES", ROOT / "bench" / "notes.md"))
        notes = notes_file.read_text() if notes_file.exists() else ""
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render(report, notes))
    print(f"bench: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
