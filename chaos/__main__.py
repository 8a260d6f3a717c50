"""``python -m chaos``: every scenario (or ``CHAOS_ONLY=a,b``), a line each, then the report.

Each scenario has a hard time limit, and the run a budget (``CHAOS_BUDGET``, 600 s): a
scenario that would not fit in what is left is reported as failed, not run.

The full run writes ``docs/reliability.md`` (``CHAOS_REPORT`` names another file; a subset
writes one only when it is set). The exit status is 1 if any scenario failed.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType

from chaos import runner
from chaos.lab import ROOT
from chaos.report import Run, render
from chaos.scenarios import SCENARIOS, Scenario
from chaos.servers import ThrowawayPostgres, ThrowawayRedis

LOGS = ROOT / ".chaos"
REPORT = "docs/reliability.md"


def selected() -> list[Scenario]:
    only = [n.strip() for n in os.environ.get("CHAOS_ONLY", "").split(",") if n.strip()]
    if not only:
        return list(SCENARIOS)
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in only if n not in known]
    if unknown:
        names = ", ".join(known)
        raise SystemExit(f"chaos: unknown scenario {', '.join(unknown)} (known: {names})")
    return [known[n] for n in only]


def _commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{REPORT}")
    return commit + (" (with local changes)" if changes else "")


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the servers' clean-up


def main() -> int:
    scenarios = selected()
    signal.signal(signal.SIGTERM, _stop)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir()
    began = time.monotonic()
    commit = _commit()  # the code that runs, before any file changes under it
    folder = Path(tempfile.mkdtemp(prefix="chaos-"))
    postgres = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="chaos-pg-")))
    redis = ThrowawayRedis(folder / "redis")
    results: list[runner.Result] = []
    try:
        postgres.init()
        postgres.start()
        redis.start()
        print(
            f"chaos: Postgres on 127.0.0.1:{postgres.port}, Redis on 127.0.0.1:{redis.port}; "
            f"{len(scenarios)} scenarios",
            flush=True,
        )
        software = (
            f"Python {platform.python_version()}, Celery {version('celery')}, "
            f"kombu {version('kombu')}, SQLAlchemy {version('sqlalchemy')}, "
            f"{postgres.version()}, {redis.version()}"
        )
        width = max(len(s.name) for s in scenarios)
        budget = float(os.environ.get("CHAOS_BUDGET", "600"))
        for n, scenario in enumerate(scenarios, 1):
            if time.monotonic() - began + scenario.timeout > budget:
                result = runner.Result(scenario.name, scenario.done, False, None, 0.0, "")
                result.detail = f"not run: the run's budget of {budget:.0f}s ran out"
            else:
                result = runner.run(scenario, postgres, redis, LOGS / scenario.name)
            results.append(result)
            recovery = "-" if result.recovery is None else f"{result.recovery:5.1f}s"
            verdict = "passed" if result.passed else "FAILED"
            line = f"[{n:2}/{len(scenarios)}] {scenario.name:<{width}}  {verdict:<6}  "
            line += f"recovery {recovery:>6}  ({result.seconds:4.0f}s)"
            if not result.passed:
                line += f"\n         {result.detail}\n         operator sees: {result.operator}"
            print(line, flush=True)
    finally:
        postgres.destroy()
        redis.destroy()
        shutil.rmtree(folder, ignore_errors=True)
        if any(not r.passed for r in results):
            print(f"chaos: each scenario's process logs are in {LOGS}/<scenario>", flush=True)
    total = time.monotonic() - began
    target = os.environ.get("CHAOS_REPORT") or (
        str(ROOT / REPORT) if len(scenarios) == len(SCENARIOS) else ""
    )
    if target:
        machine = f"{platform.system()} {platform.release()}, {os.cpu_count()} cores"
        run = Run(datetime.now(UTC), commit, machine, software, total)
        Path(target).write_text(render(run, results))
        print(f"chaos: wrote {target}")
    failed = [r.name for r in results if not r.passed]
    print(
        f"chaos: {len(results) - len(failed)} of {len(results)} passed in {total:.0f}s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
