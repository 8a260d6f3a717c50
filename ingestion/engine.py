"""One burst against a store: claim, ``around``/``next`` loop, page commits, transition.

While a burst runs, a heartbeat renews its short lease, so that a dead worker's provider is
taken over within seconds while a slow one keeps its step. How a burst ends decides the next
step: the next burst, the checking phase, the sweep and the rest, a backoff, a wait, or parking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import itertools
import json
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ingestion.errors import (
    DatabaseUnavailable,
    IngestionError,
    LeaseLost,
    ProviderError,
    RetryAfter,
    SourceRefused,
)
from ingestion.options import ProviderOptions
from ingestion.preparing import ContractBroken, prepare_check, prepare_page
from ingestion.provider import (
    IncrementalEntityProvider,
    RemovalCandidate,
    checks_removals,
    handles_events,
)
from ingestion.state import BurstOutcome, Phase
from ingestion.store import (
    Claim,
    Doorbell,
    LostBurst,
    Page,
    PageCommit,
    Skip,
    Store,
    SweepResult,
)

log = logging.getLogger("ingestion.engine")


@dataclass(frozen=True)
class Registered:
    """A provider and its validated options."""

    provider: IncrementalEntityProvider[Any, Any]
    options: ProviderOptions

    @property
    def name(self) -> str:
        return self.provider.get_provider_name()


@dataclass
class BurstReport:
    """What one step did: the structured log line and the metrics are made from it."""

    provider: str
    outcome: BurstOutcome
    cycle_id: int | None = None
    burst: int | None = None
    pages: int = 0
    entities: int = 0
    written: int = 0
    unchanged: int = 0
    rejected: int = 0
    checked: int = 0  # removal candidates asked about
    duration: float = 0.0
    reason: str | None = None
    next: Doorbell | None = None
    sweep: SweepResult | None = None
    commits: list[PageCommit] = field(default_factory=list)


ProgressCallback = Callable[[BurstReport], None]


def _describe_failure(exc: BaseException, where: str, timeout: float) -> str:
    if isinstance(exc, ContractBroken):
        head = str(exc)
    elif isinstance(exc, SoftTimeLimitExceeded):
        head = f"{where}: the burst outran its time limit (next() took longer than {timeout:g}s)"
    elif isinstance(exc, TimeoutError):
        head = f"{where}: next() did not return within {timeout:g}s"
    else:
        head = f"{where}: {type(exc).__name__}: {exc}"
    return head + "\n\n" + "".join(traceback.format_exception(exc))


class Engine:
    """Runs the steps of registered providers against a store."""

    def __init__(
        self,
        store: Store,
        providers: dict[str, Registered],
        *,
        page_timeout: float = 60.0,
        time_limit_grace: float = 10.0,
        lease_seconds: float = 10.0,
        database_retry: float = 0.2,
    ) -> None:
        self.store = store
        self.providers = providers
        self.page_timeout = page_timeout
        self.time_limit_grace = time_limit_grace
        self.lease_seconds = lease_seconds
        self.database_retry = database_retry

    def time_limits(self, name: str) -> tuple[float, float]:
        """The soft and hard time limits of one burst of ``name``."""
        soft = self.providers[name].options.burst_length.total_seconds() + self.page_timeout
        return soft, soft + self.time_limit_grace

    def lease(self, name: str) -> timedelta:
        """How long a burst holds its provider without renewing (its heartbeat renews it)."""
        return timedelta(seconds=self.lease_seconds)

    def run_step(
        self, name: str, ticket: int, owner: str, progress: ProgressCallback | None = None
    ) -> BurstReport:
        """Claim the step ``(name, ticket)`` and run it; a stale or duplicate one is skipped."""
        registered = self.providers.get(name)
        if registered is None:
            log.warning(
                "skipped %s ticket %s: no provider of that name is registered here", name, ticket
            )
            return BurstReport(
                name, BurstOutcome.SKIPPED, reason="provider not registered in this app"
            )
        claim = self.store.claim(name, ticket, owner, self.lease(name), registered.options)
        if isinstance(claim, Skip):
            log.info("skipped %s ticket %s: %s", name, ticket, claim.reason)
            return BurstReport(name, BurstOutcome.SKIPPED, reason=claim.reason)
        if isinstance(claim, LostBurst):
            log.warning("provider %s: %s", name, claim.reason)
            return BurstReport(name, BurstOutcome.LOST, reason=claim.reason, next=claim.doorbell)
        return self._burst(registered, claim, progress)

    def _burst(
        self, registered: Registered, claim: Claim, progress: ProgressCallback | None
    ) -> BurstReport:
        run = _BurstRun(self, registered, claim, progress)
        try:
            return self._run_and_end(run, registered, claim)
        except SoftTimeLimitExceeded:  # while recording how it ended (frozen, or no database):
            # what it could not record is left to its lease, and the step is taken over.
            run.report.outcome = BurstOutcome.INTERRUPTED
            run.report.reason = "the burst's time limit passed while it was recording how it ended"
            log.warning("%s: stopped: %s", run.where(), run.report.reason)
            return self._finish(run.report, run.started)

    def _run_and_end(self, run: _BurstRun, registered: Registered, claim: Claim) -> BurstReport:
        report = run.report
        heartbeat = _Heartbeat(self.store, claim, run.lease)
        heartbeat.start()
        try:
            run.around()
        except LeaseLost as exc:
            log.warning("provider %s: burst %s stopped: %s", claim.provider, claim.burst, exc)
            report.outcome, report.reason = BurstOutcome.INTERRUPTED, str(exc)
            return self._finish(report, run.started)
        except RetryAfter as exc:
            # The source asked to wait (a rate limit): not a failure, so no backoff step.
            report.outcome = BurstOutcome.WAITING
            report.reason = f"provider {claim.provider!r}, {run.where_short()}: {exc}"
            log.warning("burst paused: %s", report.reason)
            wait = timedelta(seconds=exc.seconds)
            report.next = self._recorded(
                run, lambda: self.store.wait_burst(claim, wait, report.reason or "")
            )
            return self._finish(report, run.started)
        except Exception as exc:
            self._failed(run, registered, exc)
            return self._finish(report, run.started)
        finally:
            heartbeat.stop()
        try:
            finished = self._recorded(
                run,
                lambda: self.store.finish_burst(
                    claim,
                    done=run.done,
                    lease=run.lease,
                    options=registered.options,
                    checks_removals=checks_removals(registered.provider),
                ),
            )
        except LeaseLost as exc:
            report.outcome, report.reason = BurstOutcome.INTERRUPTED, str(exc)
            return self._finish(report, run.started)
        if finished is None:
            # Its pages are committed; the database did not come back in time to record the
            # end of the burst, so its lease runs out and the step is taken over.
            report.outcome = BurstOutcome.INTERRUPTED
            report.reason = "the database did not come back in time to record the burst's end"
            return self._finish(report, run.started)
        report.next, report.sweep = finished
        completed = report.sweep is not None
        report.outcome = BurstOutcome.DONE if completed else BurstOutcome.CONTINUED
        return self._finish(report, run.started)

    def _failed(self, run: _BurstRun, registered: Registered, exc: BaseException) -> None:
        """Record why the burst failed and schedule what follows: a retry once the database
        answers, parking for a refusal, the backoff for anything else."""
        claim, report = run.claim, run.report
        message = _describe_failure(exc, run.where(), self.page_timeout)
        report.outcome, report.reason = BurstOutcome.FAILED, message.split("\n", 1)[0]
        log.error("burst failed: %s", report.reason)
        page = run.sequence if claim.phase is Phase.INGEST else None
        if isinstance(exc, DatabaseUnavailable):
            retry = timedelta(seconds=self.database_retry)
            report.next = self._recorded(
                run, lambda: self.store.database_failure(claim, message, retry, page=page)
            )
        elif isinstance(exc, SourceRefused):
            report.next = self._recorded(
                run, lambda: self.store.park_burst(claim, message, page=page)
            )
        else:
            problems = run.pending.rejected if run.pending is not None else []
            if isinstance(exc, ContractBroken):
                problems = problems or exc.problems
            report.next = self._recorded(
                run,
                lambda: self.store.fail_burst(
                    claim, message, registered.options, page=page, problems=problems
                ),
            )

    def _recorded(self, run: _BurstRun, write: Callable[[], Any]) -> Any:
        """Write how the burst ended; while the database does not answer, try again until the
        burst's time is up (a worker whose database came back records the real cause)."""
        soft, _ = self.time_limits(run.claim.provider)
        deadline = run.started + soft - 1.0
        while True:
            try:
                return write()
            except DatabaseUnavailable as exc:
                if time.monotonic() + self.database_retry >= deadline:
                    log.error(
                        "provider %s: could not record how burst %s ended, the database did "
                        "not come back in time (%s); its lease will run out and the step be "
                        "taken over",
                        run.claim.provider,
                        run.claim.burst,
                        exc,
                    )
                    return None
                time.sleep(self.database_retry)

    async def bounded(self, awaitable: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(_as_coroutine(awaitable), self.page_timeout)

    def _finish(self, report: BurstReport, started: float) -> BurstReport:
        report.duration = time.monotonic() - started
        log.info(
            "burst provider=%s cycle=%s burst=%s pages=%d entities=%d written=%d unchanged=%d "
            "rejected=%d checked=%d duration=%.3fs outcome=%s",
            report.provider,
            report.cycle_id,
            report.burst,
            report.pages,
            report.entities,
            report.written,
            report.unchanged,
            report.rejected,
            report.checked,
            report.duration,
            report.outcome.value,
        )
        return report


class _Heartbeat:
    """Renews a running burst's lease every third of it, from a thread of its own, so that a
    burst stuck in a long ``next()`` keeps its provider while its process lives."""

    def __init__(self, store: Store, claim: Claim, lease: timedelta) -> None:
        self.store = store
        self.claim = claim
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{claim.provider}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = self.lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self.store.renew_lease(self.claim, self.lease):
                    self.lost = True  # the next commit says so: LeaseLost
                    return
            except Exception as exc:  # the database is away: the next commit will tell
                log.warning("provider %s: lease not renewed: %s", self.claim.provider, exc)


class _BurstRun:
    """The loop of one claimed burst, handed to the provider's ``around()``: pages in the
    ingest phase, batches of removal checks in the checking phase."""

    def __init__(
        self,
        engine: Engine,
        registered: Registered,
        claim: Claim,
        progress: ProgressCallback | None,
    ) -> None:
        self.engine = engine
        self.provider = registered.provider
        self.options = registered.options
        self.claim = claim
        self.progress = progress
        self.lease = engine.lease(claim.provider)
        self.report = BurstReport(
            claim.provider, BurstOutcome.RUNNING, cycle_id=claim.cycle_id, burst=claim.burst
        )
        self.started = time.monotonic()
        self.deadline = self.started + registered.options.burst_length.total_seconds()
        # The cursor of the next page to read: a page read ahead moves it before its commit.
        self.cursor: Any = json.loads(claim.cursor) if claim.cursor is not None else None
        self.sequence = claim.next_sequence  # the next page to commit
        self.reading = claim.next_sequence  # the next page to read
        self.committer: concurrent.futures.ThreadPoolExecutor | None = None
        self.in_flight: concurrent.futures.Future[PageCommit] | None = None
        self.commit_failed = False
        self.check_after = claim.check_after
        self.candidates: list[RemovalCandidate] = []
        self.batches = 0
        self.pending: Page | None = None  # the page being committed, for its error records
        self.done = False
        self.called = False
        # A provider that takes events: each page remembers the last event applied to the
        # provider when its read began, so that the page does not undo a later event.
        self.takes_events = handles_events(self.provider)
        self.events_seen: int | None = None

    def where(self) -> str:
        c = self.claim
        return f"provider {c.provider!r}, cycle {c.cycle_id}, burst {c.burst}, {self.where_short()}"

    def where_short(self) -> str:
        if self.claim.phase is Phase.CHECK:
            return f"removal checks after {self.check_after or 'the start'}"
        # A commit that failed is the burst's failure; otherwise the page being read is.
        return f"page {self.sequence if self.commit_failed else self.reading}"

    def around(self) -> None:
        if inspect.iscoroutinefunction(self.provider.around):
            asyncio.run(_as_coroutine(self.provider.around(self.async_burst)))
        else:
            outcome = self.provider.around(self.sync_burst)
            if inspect.isawaitable(outcome):
                asyncio.run(_as_coroutine(outcome))
        if not self.called:
            raise ContractBroken(
                f"provider {self.claim.provider!r}: around() returned without calling "
                "burst(context)"
            )

    def _call(self, context: Any) -> Any:
        """The provider's next page, or its answer about the next batch of candidates."""
        if self.claim.phase is Phase.CHECK:
            candidates = self.engine.store.removal_candidates(
                self.claim,
                self.options,
                after=self.check_after,
                limit=self.options.removal_check_batch,
            )
            if not candidates:
                return _NO_CANDIDATES
            self.candidates = candidates
            if self.takes_events:
                self.events_seen = self.engine.store.last_event_id(self.claim.provider)
            return self.provider.check_removals(context, candidates)
        if self.takes_events:
            self.events_seen = self.engine.store.last_event_id(self.claim.provider)
        return self.provider.next(context, self.cursor)

    def sync_burst(self, context: Any) -> None:
        self.called = True
        runner: asyncio.Runner | None = None
        try:
            while True:
                for attempt in itertools.count():
                    try:
                        result = self._call(context)
                        if inspect.isawaitable(result):
                            runner = runner or asyncio.Runner()
                            result = runner.run(self.engine.bounded(result))
                        break
                    except Exception as exc:
                        self._retry_or_raise(exc, attempt)
                        time.sleep(self._pause(attempt))
                if self.commit(result):
                    return
        except BaseException as exc:
            self._drain(exc)
            raise
        finally:
            self._close_committer()
            if runner is not None:
                runner.close()

    async def async_burst(self, context: Any) -> None:
        self.called = True
        try:
            while True:
                for attempt in itertools.count():
                    try:
                        result = self._call(context)
                        if inspect.isawaitable(result):
                            result = await self.engine.bounded(result)
                        break
                    except Exception as exc:
                        self._retry_or_raise(exc, attempt)
                        await asyncio.sleep(self._pause(attempt))
                if self.commit(result):
                    return
        except BaseException as exc:
            self._drain(exc)
            raise
        finally:
            self._close_committer()

    def _retry_or_raise(self, exc: Exception, attempt: int) -> None:
        """A failing ``next()`` (or batch of checks) is asked again at the same cursor, up to
        ``page_retries`` times while the burst has time; anything the engine itself raised, a
        page that timed out, or a source that says wait or refuse, is not. A provider's own
        error (a ``ProviderError`` such as a 502 from the source) is a failing page like any
        other."""
        if (
            not _worth_asking_again(exc)
            or attempt >= self.options.page_retries
            or time.monotonic() >= self.deadline
        ):
            raise exc
        log.warning(
            "provider %s: %s failed (%s: %s); asking again",
            self.claim.provider,
            self.where_short(),
            type(exc).__name__,
            exc,
        )

    @staticmethod
    def _pause(attempt: int) -> float:
        return float(min(0.05 * 2**attempt, 1.0))

    def commit(self, result: object) -> bool:
        """Commit one batch of checks, or hand one page to the committer; whether the burst
        should stop (done, or time is up).

        A page commits on the committer's thread while the provider's next page is read and
        prepared on this one. Commits keep their order: a page is handed over only once the
        one before it has committed, and the burst returns only once its last page has."""
        if self.claim.phase is Phase.CHECK:
            self.commit_check(result)
            if self.progress is not None:
                self.progress(self.report)
            return self.done or time.monotonic() >= self.deadline
        page = prepare_page(self.claim.provider, result, self.reading)
        if self.events_seen is not None:
            page = dataclasses.replace(page, events_seen=self.events_seen)
        self._settle()
        self.pending = page
        if self.committer is None:
            self.committer = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"commit-{self.claim.provider}"
            )
        # A hint for the writer: a page like the last one is likely unchanged too.
        last = self.report.commits[-1] if self.report.commits else None
        self.in_flight = self.committer.submit(
            self.engine.store.commit_page,
            self.claim,
            page,
            self.sequence,
            self.lease,
            expect_unchanged=last is None or last.unchanged > 0,
        )
        # Read on from the page's cursor while it commits; never past the last page, nor
        # once the burst's time is up. The burst's first page commits before the clock is
        # read, as every page did before pages overlapped: a burst shorter than one page
        # still takes exactly one.
        self.cursor = json.loads(page.cursor) if page.cursor is not None else None
        self.reading += 1
        if not self.report.commits:
            self._settle()
        if page.done or time.monotonic() >= self.deadline:
            self._settle()
            return True
        return False

    def _settle(self) -> None:
        """Wait for the page in flight to commit, and count it; its failure is raised here."""
        future, self.in_flight = self.in_flight, None
        if future is None:
            return
        try:
            commit = future.result()
        except BaseException:
            self.in_flight = future  # still the page in flight, for _drain
            self.commit_failed = future.done()
            raise
        page, self.pending = self.pending, None
        assert page is not None
        report = self.report
        report.commits.append(commit)
        report.pages += 1
        report.written += commit.written
        report.unchanged += commit.unchanged
        report.entities += commit.written + commit.unchanged
        report.rejected += commit.rejected
        self.sequence += 1
        self.done = page.done
        if self.progress is not None:
            self.progress(self.report)

    def _drain(self, exc: BaseException) -> None:
        """The burst is failing with ``exc``: let the page in flight finish first, so that
        what is recorded matches what committed. A page read ahead that failed after the one
        before it committed loses nothing committed; a commit that failed is the failure."""
        future = self.in_flight
        if future is None:
            return
        try:
            future.result()
        except BaseException as failed:
            self.commit_failed = True
            if failed is not exc:
                raise failed from exc
            return
        self._settle()

    def _close_committer(self) -> None:
        if self.committer is not None:
            self.committer.shutdown(wait=True)
            self.committer = None

    def commit_check(self, result: object) -> None:
        if result is _NO_CANDIDATES:
            self.done = True
            return
        self.batches += 1
        batch = prepare_check(self.claim.provider, result, self.candidates, self.batches)
        if self.events_seen is not None:
            present = dataclasses.replace(batch.present, events_seen=self.events_seen)
            batch = dataclasses.replace(batch, present=present)
        commit = self.engine.store.commit_check(self.claim, batch, self.lease)
        report = self.report
        report.checked += commit.checked
        report.written += commit.written
        report.unchanged += commit.unchanged
        report.entities += commit.written + commit.unchanged
        report.rejected += commit.rejected
        self.check_after = batch.candidates[-1]
        self.done = len(batch.candidates) < self.options.removal_check_batch


_NO_CANDIDATES = object()


def _worth_asking_again(exc: Exception) -> bool:
    """Whether a failed ``next()`` or batch of checks may succeed if asked again at once: not
    a refusal, a wait, a broken contract, an error of the engine's own (the database, the
    lease) or a timeout."""
    if isinstance(exc, SourceRefused | RetryAfter | ContractBroken):
        return False
    if isinstance(exc, ProviderError):
        return True
    return not isinstance(exc, IngestionError | TimeoutError | SoftTimeLimitExceeded)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
