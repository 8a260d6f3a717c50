"""One burst against a store: claim, ``around``/``next`` loop, page commits, transition."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ingestion.entities import PreparedEntity, describe, prepare
from ingestion.errors import EntityRejected, LeaseLost, ProviderError, RetryAfter
from ingestion.options import ProviderOptions
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    Rejection,
)
from ingestion.state import BurstOutcome
from ingestion.store import (
    Claim,
    Doorbell,
    LostBurst,
    Page,
    PageCommit,
    Problem,
    Skip,
    Store,
    SweepResult,
)

log = logging.getLogger("ingestion.engine")


class ContractBroken(ProviderError):
    """A provider broke the interface (a result that is not a page, a cursor JSON cannot
    encode, an ``around()`` that never calls ``burst``); the message says where."""


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
    duration: float = 0.0
    reason: str | None = None
    next: Doorbell | None = None
    sweep: SweepResult | None = None
    commits: list[PageCommit] = field(default_factory=list)


ProgressCallback = Callable[[BurstReport], None]


def prepare_page(provider_name: str, result: object, sequence: int) -> Page:
    """Check what ``next()`` returned and turn it into a page ready to commit.

    Invalid entities become error records; a result that is not a page, or a cursor JSON cannot
    encode, fails the burst.
    """
    where = f"provider {provider_name!r}, page {sequence}"
    if not isinstance(result, EntityIteratorResult):
        raise ContractBroken(
            f"{where}: next() returned {type(result).__name__}, expected EntityIteratorResult"
        )
    if not isinstance(result.done, bool):
        raise ContractBroken(f"{where}: done must be true or false, got {result.done!r}")
    try:
        cursor = json.dumps(result.cursor, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ContractBroken(
            f"{where}: next() returned a cursor of type {type(result.cursor).__name__} that "
            f"JSON cannot encode ({exc}); a cursor must be made of JSON values"
        ) from None
    rejected: list[Problem] = []
    warnings: list[Problem] = []
    prepared: dict[str, PreparedEntity] = {}
    for position, item in enumerate(result.entities or ()):
        if not isinstance(item, DeferredEntity):
            rejected.append(
                Problem(
                    f"#{position}",
                    "deferred",
                    f"{where}, entity #{position}: expected DeferredEntity, "
                    f"got {type(item).__name__}",
                )
            )
            continue
        label = describe(item.entity) or f"#{position}"
        try:
            entity = prepare(item.entity, provider_name, item.location_key)
        except EntityRejected as exc:
            rejected.append(
                Problem(label, exc.rule, f"{where}, entity #{position} ({label}): {exc.message}")
            )
            continue
        if entity.ref in prepared:
            del prepared[entity.ref]  # keep the last one, in its own position
            warnings.append(
                Problem(
                    label,
                    "duplicate",
                    f"{where}: {entity.ref} appears more than once in the page; the last one wins",
                    entity.ref,
                )
            )
        prepared[entity.ref] = entity
    for position, rejection in enumerate(result.rejections or ()):
        if not isinstance(rejection, Rejection):
            rejected.append(
                Problem(
                    f"rejection #{position}",
                    "rejection",
                    f"{where}, rejection #{position}: expected Rejection, "
                    f"got {type(rejection).__name__}",
                )
            )
            continue
        rejected.append(
            Problem(
                rejection.subject[:500],
                rejection.rule[:64],
                f"{where}, {rejection.subject}: {rejection.message}",
            )
        )
    kept = [
        r.location_key
        for r in result.rejections or ()
        if isinstance(r, Rejection) and isinstance(r.location_key, str)
    ]
    return Page(list(prepared.values()), cursor, result.done, rejected, warnings, kept)


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
    ) -> None:
        self.store = store
        self.providers = providers
        self.page_timeout = page_timeout
        self.time_limit_grace = time_limit_grace

    def time_limits(self, name: str) -> tuple[float, float]:
        """The soft and hard time limits of one burst of ``name``."""
        soft = self.providers[name].options.burst_length.total_seconds() + self.page_timeout
        return soft, soft + self.time_limit_grace

    def lease(self, name: str) -> timedelta:
        # Longer than the hard time limit: a burst still alive is never taken over.
        return timedelta(seconds=self.time_limits(name)[1] + self.time_limit_grace)

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
        report = run.report
        try:
            run.around()
        except LeaseLost as exc:
            log.warning("provider %s: burst %s stopped: %s", claim.provider, claim.burst, exc)
            report.outcome, report.reason = BurstOutcome.INTERRUPTED, str(exc)
            return self._finish(report, run.started)
        except RetryAfter as exc:
            # The source asked to wait (a rate limit): not a failure, so no backoff step.
            report.outcome = BurstOutcome.WAITING
            report.reason = f"provider {claim.provider!r}, page {run.sequence}: {exc}"
            log.warning("burst paused: %s", report.reason)
            wait = timedelta(seconds=exc.seconds)
            report.next = self.store.wait_burst(claim, wait, report.reason)
            return self._finish(report, run.started)
        except Exception as exc:
            where = (
                f"provider {claim.provider!r}, cycle {claim.cycle_id}, burst {claim.burst}, "
                f"page {run.sequence}"
            )
            message = _describe_failure(exc, where, self.page_timeout)
            report.outcome, report.reason = BurstOutcome.FAILED, message.split("\n", 1)[0]
            log.error("burst failed: %s", report.reason)
            report.next = self.store.fail_burst(claim, message, registered.options)
            return self._finish(report, run.started)
        try:
            report.next, report.sweep = self.store.finish_burst(
                claim, done=run.done, lease=run.lease, options=registered.options
            )
        except LeaseLost as exc:
            report.outcome, report.reason = BurstOutcome.INTERRUPTED, str(exc)
            return self._finish(report, run.started)
        report.outcome = BurstOutcome.DONE if run.done else BurstOutcome.CONTINUED
        return self._finish(report, run.started)

    async def bounded(self, awaitable: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(_as_coroutine(awaitable), self.page_timeout)

    def _finish(self, report: BurstReport, started: float) -> BurstReport:
        report.duration = time.monotonic() - started
        log.info(
            "burst provider=%s cycle=%s burst=%s pages=%d entities=%d written=%d unchanged=%d "
            "rejected=%d duration=%.3fs outcome=%s",
            report.provider,
            report.cycle_id,
            report.burst,
            report.pages,
            report.entities,
            report.written,
            report.unchanged,
            report.rejected,
            report.duration,
            report.outcome.value,
        )
        return report


class _BurstRun:
    """The page loop of one claimed burst, handed to the provider's ``around()``."""

    def __init__(
        self,
        engine: Engine,
        registered: Registered,
        claim: Claim,
        progress: ProgressCallback | None,
    ) -> None:
        self.engine = engine
        self.provider = registered.provider
        self.claim = claim
        self.progress = progress
        self.lease = engine.lease(claim.provider)
        self.report = BurstReport(
            claim.provider, BurstOutcome.RUNNING, cycle_id=claim.cycle_id, burst=claim.burst
        )
        self.started = time.monotonic()
        self.deadline = self.started + registered.options.burst_length.total_seconds()
        self.cursor: Any = json.loads(claim.cursor) if claim.cursor is not None else None
        self.sequence = claim.next_sequence
        self.done = False
        self.called = False

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

    def sync_burst(self, context: Any) -> None:
        self.called = True
        runner: asyncio.Runner | None = None
        try:
            while True:
                result = self.provider.next(context, self.cursor)
                if inspect.isawaitable(result):
                    runner = runner or asyncio.Runner()
                    result = runner.run(self.engine.bounded(result))
                if self.commit(result):
                    return
        finally:
            if runner is not None:
                runner.close()

    async def async_burst(self, context: Any) -> None:
        self.called = True
        while True:
            result = self.provider.next(context, self.cursor)
            if inspect.isawaitable(result):
                result = await self.engine.bounded(result)
            if self.commit(result):
                return

    def commit(self, result: object) -> bool:
        """Commit one page; whether the burst should stop (source done or time is up)."""
        page = prepare_page(self.claim.provider, result, self.sequence)
        # A hint for the writer: a page like the last one is likely unchanged too.
        last = self.report.commits[-1] if self.report.commits else None
        commit = self.engine.store.commit_page(
            self.claim,
            page,
            self.sequence,
            self.lease,
            expect_unchanged=last is None or last.unchanged > 0,
        )
        report = self.report
        report.commits.append(commit)
        report.pages += 1
        report.written += commit.written
        report.unchanged += commit.unchanged
        report.entities += commit.written + commit.unchanged
        report.rejected += commit.rejected
        self.cursor = json.loads(page.cursor) if page.cursor is not None else None
        self.sequence += 1
        self.done = page.done
        if self.progress is not None:
            self.progress(report)
        return self.done or time.monotonic() >= self.deadline


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
