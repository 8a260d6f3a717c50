"""One scenario's world: a database, a queue, a source over HTTP, worker and beat processes.

A :class:`Lab` is built fresh for each scenario on the run's throwaway servers, and it knows how
to check the outcome: the catalog against the source, each page committed once, and how long
the pages stopped flowing after the fault.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from chaos.app import build
from chaos.servers import ThrowawayPostgres, ThrowawayRedis, WaitTimeout, wait_until
from ingestion import Action, CycleStatus, IncrementalIngestion, IngestionError, Settings
from ingestion.store import models as m
from providers.synthetic import SourceServer, SyntheticSource

ROOT = Path(__file__).resolve().parent.parent
PROVIDER = "services"
T = TypeVar("T")

#: Engine settings of every scenario: fast recovery, the same mechanisms as in production.
ENGINE_SETTINGS = {
    "INGESTION_RECONCILE_INTERVAL": "1",
    "INGESTION_RESEND_AFTER": "1",
    "INGESTION_PAGE_TIMEOUT": "3",
    "INGESTION_TIME_LIMIT_GRACE": "1",
}

#: Provider options of every scenario unless it says otherwise.
OPTIONS: dict[str, Any] = {
    "burst_length": 1.0,
    "burst_interval": 0.2,
    "rest_length": 3600,
    "backoff": [0.5, 0.5, 0.5, 0.5],
}


class ScenarioFailed(AssertionError):
    """A scenario's check did not hold; the message says which and what was seen."""


@dataclass
class Fault:
    """When the fault began and ended (epoch seconds), and when the pending step was due."""

    started: float
    ended: float
    due: float  # pages cannot flow before this (the end of a rest), epoch seconds
    bursts_before: int  # the id of the last burst before the fault

    @property
    def resume_from(self) -> float:
        return max(self.ended, self.due)


class Process:
    """A ``celery`` process in a session of its own, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process and its pool children (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)  # a stopped group must not survive the run
            self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@dataclass
class Lab:
    """A fresh database, queue, source and set of processes for one scenario."""

    name: str
    postgres: ThrowawayPostgres
    redis: ThrowawayRedis
    folder: Path
    deadline: float  # time.monotonic() at which the scenario has run out of time
    count: int = 2000
    per_page: int = 50
    delay: float = 0.04
    options: dict[str, Any] = field(default_factory=dict)
    # Engine settings of this scenario over ENGINE_SETTINGS (for example the default page
    # timeout, where the scenario is about what a deployment with defaults does).
    settings: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    recorded: Fault | None = None  # the fault, once the scenario has injected it
    seen: list[str] = field(default_factory=list)  # what the status said during recovery

    def __post_init__(self) -> None:
        self.database = f"chaos_{self.name}_{uuid.uuid4().hex[:6]}"
        self.queue = f"chaos-{self.name}-{uuid.uuid4().hex[:6]}"
        self.control = self.folder / "control"
        self.source = SyntheticSource(count=self.count, per_page=self.per_page, delay=self.delay)
        self.server = SourceServer(self.source)
        # A worker killed mid-request leaves a broken pipe behind: expected here, not news.
        self.server.httpd.handle_error = lambda *_: None  # type: ignore[method-assign]
        self.url = ""
        self._client: IncrementalIngestion | None = None

    # -- set-up and tear-down -------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.control.mkdir(exist_ok=True)
        self.url = self.postgres.create_database(self.database)
        self.server.__enter__()
        self.client.migrate()
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes.values():
            process.kill()
        self.server.__exit__()
        if self._client is not None:
            self._client.store.dispose()
        if self.postgres.running() and self.postgres.accepts():
            self.postgres.drop_database(self.database)
        if self.redis.answers():
            client = self.redis.client()
            keys = list(client.scan_iter(match=f"*{self.queue}*"))
            if keys:
                client.delete(*keys)
            client.close()

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "name": PROVIDER,
            "url": self.server.url,
            "per_page": self.per_page,
            "options": {**OPTIONS, **self.options},
        }

    @property
    def engine_settings(self) -> dict[str, str]:
        return {**ENGINE_SETTINGS, **self.settings}

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.engine_settings)
        env.update(
            {
                "INGESTION_DATABASE_URL": self.url,
                "CELERY_BROKER_URL": self.redis.url(),
                "INGESTION_QUEUE": self.queue,
                "CHAOS_PROVIDERS": json.dumps([self.spec]),
                "CHAOS_CONTROL": str(self.control),
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    @property
    def client(self) -> IncrementalIngestion:
        """This process's view of what the workers run: same provider, database and queue."""
        if self._client is None:
            settings = Settings(
                database_url=self.url,
                broker_url=self.redis.url(),
                queue=self.queue,
                page_timeout=float(self.engine_settings["INGESTION_PAGE_TIMEOUT"]),
                time_limit_grace=float(self.engine_settings["INGESTION_TIME_LIMIT_GRACE"]),
                reconcile_interval=float(self.engine_settings["INGESTION_RECONCILE_INTERVAL"]),
                resend_after=float(self.engine_settings["INGESTION_RESEND_AFTER"]),
            )
            self._client = build(settings, [self.spec], self.control)
        return self._client

    def start(self, workers: int = 2, *, beat: bool = True) -> None:
        """Start ``workers`` workers (prefork, one pool process each) and a beat; wait for
        them all to be ready."""
        celery = [sys.executable, "-m", "celery", "-A", "chaos.app"]
        started: list[tuple[Process, str]] = []
        for n in range(1, workers + 1):
            name = f"w{n}"
            args = [
                *celery,
                "worker",
                "--loglevel=INFO",
                f"--hostname={name}@%h",
                "--concurrency=1",
                "--pool=prefork",
                "--without-mingle",
                "--without-gossip",
            ]
            started.append((self._spawn(name, args), " ready."))
        if beat:
            args = [*celery, "beat", "--loglevel=INFO", f"--schedule={self.folder / 'beat'}"]
            started.append((self._spawn("beat", args), "beat: Starting"))
        for process, line in started:

            def ready(process: Process = process, line: str = line) -> bool:
                if not process.alive():
                    raise ScenarioFailed(f"{process.name} exited:\n{process.log()[-2000:]}")
                return line in process.log()

            self.wait(ready, f"{process.name} ready", timeout=60)

    def _spawn(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.env, self.folder)
        self.processes[name] = process
        return process

    def worker_of(self, burst: dict[str, Any]) -> Process:
        """The worker process that runs ``burst`` (owner ``w1@host/pid``)."""
        return self.processes[str(burst["worker"]).split("@", 1)[0]]

    # -- waiting ----------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self, predicate: Callable[[], T | None], what: str, timeout: float = 60) -> T:
        """Poll ``predicate`` (a database error counts as not yet) within the scenario's
        budget."""

        def check() -> T | None:
            try:
                return predicate()
            except SQLAlchemyError:
                return None

        bound = max(0.1, min(timeout, self.left()))
        result: T = wait_until(check, timeout=bound, interval=0.05, what=what)
        return result

    def hold(self, seconds: float) -> None:
        """Let a fault last ``seconds`` (a stated duration, not a wait for a condition)."""
        time.sleep(max(0.0, min(seconds, self.left())))

    # -- reading the engine's records ------------------------------------------------------

    def bursts(self) -> list[dict[str, Any]]:
        return list(reversed(self.client.store.bursts(PROVIDER, limit=10_000)))

    def cycles(self) -> list[dict[str, Any]]:
        return list(reversed(self.client.store.cycles(PROVIDER, limit=1000)))

    def running_burst(self, min_pages: int = 2) -> dict[str, Any] | None:
        """A burst in progress that has committed ``min_pages`` pages, if any."""
        for burst in self.client.store.bursts(PROVIDER, limit=5):
            if burst["outcome"] == "running" and burst["pages"] >= min_pages:
                return burst
        return None

    def glimpse(self) -> None:
        """Note the error the provider's status shows now, as an operator polling it would."""
        try:
            status = self.client.store.status(PROVIDER)
        except (SQLAlchemyError, IngestionError) as exc:
            line = f"status unavailable ({type(exc).__name__})"
        else:
            if not status.last_error:
                return
            line = f"{status.action.value}: {_first_line(status.last_error, 160)}"
        error = line.split(": ", 1)[-1]
        if all(seen.split(": ", 1)[-1] != error for seen in self.seen) and len(self.seen) < 3:
            self.seen.append(line)

    def completed(self, after: float = 0.0) -> dict[str, Any] | None:
        """The first cycle completed after ``after`` (epoch seconds), if any; while a fault
        is recorded, each call also notes what the status shows."""
        if self.recorded is not None:
            self.glimpse()
        for cycle in self.cycles():
            ended = cycle["ended_at"]
            if cycle["status"] == CycleStatus.COMPLETED and ended.timestamp() > after:
                return cycle
        return None

    def wait_completed(self, after: float = 0.0, timeout: float = 60) -> dict[str, Any]:
        return self.wait(lambda: self.completed(after), "a completed cycle", timeout=timeout)

    def wait_resting(self, timeout: float = 60) -> dict[str, Any]:
        """Wait for a first completed cycle and the rest after it."""
        cycle = self.wait_completed(timeout=timeout)
        self.wait(lambda: not self.client.store.status(PROVIDER).running, "the burst's end")
        return cycle

    def settle(self) -> dict[str, Any]:
        """Wait for the provider to rest, stop every process, and return the last completed
        cycle: the state the checks compare with the source, which no burst changes anymore."""

        def resting() -> bool:
            status = self.client.store.status(PROVIDER)
            return status.action is Action.REST and not status.running

        self.wait(resting, "the provider resting")
        for process in self.processes.values():
            process.kill()
        last = [c for c in self.cycles() if c["status"] == CycleStatus.COMPLETED]
        if not last:
            raise ScenarioFailed("no completed cycle")
        return last[-1]

    def last_burst_id(self) -> int:
        bursts = self.client.store.bursts(PROVIDER, limit=1)
        return int(bursts[0]["id"]) if bursts else 0

    def fault(
        self, started: float, ended: float | None = None, *, before: int = 0, in_rest: bool = False
    ) -> Fault:
        """Record a fault: its start, its end (default: now), the last burst before it and, for
        a fault in a rest, when the rest ends."""
        ended = time.time() if ended is None else ended
        due = ended
        if in_rest:
            due = self.client.store.status(PROVIDER).due_at.timestamp()
        self.recorded = Fault(started, ended, due, before)
        return self.recorded

    def lease_expires(self) -> datetime | None:
        """When the provider's lease runs out (database clock), if a burst holds it."""
        p = m.providers.c
        with self.client.store.db.read() as conn:
            value = conn.execute(
                select(p.lease_expires_at).where(p.name == PROVIDER)
            ).scalar_one_or_none()
        return value if isinstance(value, datetime) else None

    def page_times(self) -> list[float]:
        """When each page of the provider was committed (database clock, epoch seconds)."""
        k, c = m.checkpoints.c, m.cycles.c
        with self.client.store.db.read() as conn:
            rows = conn.execute(
                select(k.created_at)
                .join(m.cycles, c.id == k.cycle_id)
                .where(c.provider == PROVIDER)
                .order_by(k.created_at)
            ).all()
        return [row.created_at.timestamp() for row in rows]

    def stall(self, fault: Fault, until: float) -> float | None:
        """The longest time without a committed page from the fault's end (or the step's due
        time) until ``until``: how long the engine took to get going again."""
        since = fault.resume_from
        times = [t for t in self.page_times() if since <= t <= until]
        if not times:
            return None
        points = [since, *times]
        return max(b - a for a, b in itertools.pairwise(points))

    # -- checks -----------------------------------------------------------------------------

    def problems(self, cycle: dict[str, Any]) -> list[str]:
        """What is wrong with the catalog after the completed ``cycle``: lost, extra or stale
        entities, pages committed other than once, bursts that overlapped."""
        found: list[str] = []
        expected = self.source.refs()
        catalog = set(self.client.catalog.refs(PROVIDER))
        lost, extra = sorted(expected - catalog), sorted(catalog - expected)
        if lost:
            found.append(f"{len(lost)} lost (e.g. {lost[0]})")
        if extra:
            found.append(f"{len(extra)} not in the source (e.g. {extra[0]})")
        e = m.entities.c
        with self.client.store.db.read() as conn:
            stale = conn.execute(
                select(func.count())
                .select_from(m.entities)
                .where(e.provider == PROVIDER, e.mark_cycle != cycle["id"])
            ).scalar_one()
        if stale:
            found.append(f"{stale} entities not marked by cycle {cycle['id']}")
        b = m.bodies.c
        with self.client.store.db.read() as conn:
            bodiless = conn.execute(
                select(func.count())
                .select_from(m.entities.outerjoin(m.bodies, b.ref == e.ref))
                .where(b.ref.is_(None))
            ).scalar_one()
            orphans = conn.execute(
                select(func.count())
                .select_from(m.bodies.outerjoin(m.entities, e.ref == b.ref))
                .where(e.ref.is_(None))
            ).scalar_one()
        if bodiless or orphans:
            found.append(f"{bodiless} entities without a body, {orphans} bodies without an entity")
        checkpoints = self.client.store.checkpoints(PROVIDER, limit=100_000, cycle_id=cycle["id"])
        sequences = Counter(c["sequence"] for c in checkpoints)
        twice = sorted(s for s, n in sequences.items() if n > 1)
        if twice:
            found.append(f"pages committed twice: {twice[:10]}")
        pages = math.ceil(len(self.source.members()) / self.per_page)
        if sorted(sequences) != list(range(1, pages + 1)):
            found.append(f"cycle {cycle['id']} committed pages {len(sequences)} of {pages}")
        marked = sum(c["entities"] for c in checkpoints)
        if not marked == cycle["entities"] == len(expected):
            found.append(
                f"duplicated: checkpoints hold {marked} entities, the cycle {cycle['entities']}, "
                f"the source {len(expected)}"
            )
        found += self._overlaps()
        return found

    def _overlaps(self) -> list[str]:
        """Bursts of the provider whose lifetimes overlapped (two bursts at once)."""
        spans = sorted(
            (b["started_at"], b["ended_at"] or datetime.max.replace(tzinfo=b["started_at"].tzinfo))
            for b in self.bursts()
        )
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                return [f"two bursts ran at once (one began at {start.isoformat()})"]
        return []

    def operator_view(self, fault: Fault | None = None) -> str:
        """What ``status`` and the bursts table show an operator after the fault."""
        try:
            status = self.client.store.status(PROVIDER)
            bursts = [b for b in self.bursts() if fault is None or b["id"] > fault.bursts_before]
        except (SQLAlchemyError, IngestionError) as exc:
            return f"status unavailable: {type(exc).__name__}"
        outcomes = Counter(b["outcome"] for b in bursts)
        shown = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        text = f"{status.action.value}, attempts {status.attempts}; bursts: {shown or 'none'}"
        errors = [b["error"] for b in bursts if b["error"]]
        last = _first_line(errors[-1]) if errors else None
        if last is not None and not any(last[:100] in seen for seen in self.seen):
            text += f"; last burst error: {last}"
        elif last is None and status.last_error:
            text += f"; last error: {_first_line(status.last_error)}"
        if status.blocked_sweep:
            text += f"; blocked sweep: {_first_line(status.blocked_sweep['reason'])}"
        if self.seen:
            text = f"while recovering: {' / '.join(self.seen)}. After: {text}"
        return text

    def logs(self) -> Iterator[tuple[str, str]]:
        for name, process in self.processes.items():
            yield name, process.log()


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def raise_unless(condition: bool, message: str) -> None:
    """Fail the scenario with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ScenarioFailed(message)


__all__ = ["PROVIDER", "Fault", "Lab", "Process", "ScenarioFailed", "WaitTimeout", "raise_unless"]
