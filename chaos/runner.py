"""Running one scenario under a hard time limit, and what it yields: a :class:`Result`."""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from chaos.lab import Lab, ScenarioFailed
from chaos.scenarios import Scenario
from chaos.servers import ThrowawayPostgres, ThrowawayRedis, WaitTimeout


class ScenarioTimeout(BaseException):
    """The scenario ran past its hard time limit (a ``BaseException``: nothing swallows it)."""


@dataclass
class Result:
    """How one scenario went."""

    name: str
    done: str
    passed: bool
    recovery: float | None  # the longest stall of page commits after the fault, in seconds
    seconds: float  # the scenario's own wall time, set-up included
    operator: str  # what the operator sees: status and the bursts after the fault
    detail: str = ""  # why it failed, or what was checked
    logs: str = ""  # the folder of the processes' logs


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`ScenarioTimeout` in the main thread after ``seconds``."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise ScenarioTimeout(f"the scenario ran past its hard limit of {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def heal(postgres: ThrowawayPostgres, redis: ThrowawayRedis) -> None:
    """Bring the servers back if a scenario ended with one of them down."""
    if not postgres.running():
        postgres.start()
    if not redis.answers():
        redis.start()


def _progress(lab: Lab) -> str:
    """Where the cycles stand, for a scenario that did not complete one."""
    try:
        cycles = lab.cycles()
    except SQLAlchemyError as exc:
        return f"cycles unreadable: {type(exc).__name__}"
    statuses = Counter(str(c["status"]) for c in cycles)
    furthest = max((c["pages"] for c in cycles), default=0)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    return f"cycles: {counts or 'none'}; the furthest reached page {furthest}"


def run(
    scenario: Scenario,
    postgres: ThrowawayPostgres,
    redis: ThrowawayRedis,
    folder: Path,
) -> Result:
    """Run ``scenario`` in a fresh :class:`Lab` and check its outcome."""
    began = time.monotonic()
    result = Result(scenario.name, scenario.done, False, None, 0.0, "", logs=str(folder))
    lab = Lab(
        scenario.name, postgres, redis, folder, deadline=began + scenario.timeout, **scenario.lab
    )
    try:
        with hard_limit(scenario.timeout + 20), lab:
            _check(scenario, lab, result)
    except ScenarioTimeout as exc:
        result.passed, result.detail = False, str(exc)
    except Exception as exc:
        result.passed = False
        result.detail = f"the lab failed: {type(exc).__name__}: {exc}"
        (folder / "runner.log").write_text(traceback.format_exc())
    finally:
        for process in lab.processes.values():  # even when the lab's exit was cut short
            process.kill()
        with hard_limit(90):
            heal(postgres, redis)
    result.seconds = time.monotonic() - began
    return result


def _check(scenario: Scenario, lab: Lab, result: Result) -> None:
    try:
        until = scenario.run(lab)["ended_at"].timestamp()
        cycle = lab.settle()
        problems = lab.problems(cycle)
        result.passed = not problems
        result.detail = "; ".join(problems) or (
            f"catalog == source ({len(lab.source.refs())} entities), cycle {cycle['id']}: "
            f"{cycle['pages']} pages once each, {cycle['bursts']} bursts"
        )
    except (ScenarioFailed, WaitTimeout, ScenarioTimeout) as exc:
        result.detail = f"{exc} ({_progress(lab)})"
        until = time.time()
        (lab.folder / "runner.log").write_text(traceback.format_exc())
    fault = lab.recorded
    if fault is not None:
        with contextlib.suppress(SQLAlchemyError):
            result.recovery = lab.stall(fault, until)
    if result.passed and result.recovery is None:
        # A cycle that needed no page after the fault never had to recover from it: the
        # scenario proved nothing, however clean the catalog.
        result.passed = False
        result.detail = (
            "the scenario recorded no fault"
            if fault is None
            else "no page was committed after the fault: the recovery was never exercised"
        )
    result.operator = lab.operator_view(fault)
