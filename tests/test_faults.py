"""Faults the engine survives in one process: flaky sources, refusals, lost and frozen bursts,
slow pages under a short lease. Real SQLite and Postgres; worker processes are in
test_workers.py and the fault-injection suite (``make chaos``)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from ingestion import (
    Action,
    BurstOutcome,
    CycleStatus,
    DeferredEntity,
    EntityIteratorResult,
    IncrementalIngestion,
    LeaseLost,
    SourceRefused,
)
from ingestion.preparing import prepare_page
from ingestion.store import ErrorKind
from tests.support.ingestions import make_ingestion
from tests.support.sources import PageNumberProvider, ShiftingSource, component, names, ref
from tests.support.waiting import wait_until

OWNER = "test/faults"
# Short enough to outlive in a test, long enough that one slow disk flush does not lose it.
LEASE = 2.0


def ingestion_with(
    database_url: str, tmp_path: Path, provider: Any, **options: Any
) -> IncrementalIngestion:
    ingestion = make_ingestion(database_url, tmp_path, lease_seconds=LEASE)
    defaults: dict[str, Any] = {"burst_interval": 0, "rest_length": 3600}
    ingestion.add_provider(provider, **{**defaults, **options})
    ingestion.store.ensure_providers([provider.get_provider_name()])
    return ingestion


def cycles(ingestion: IncrementalIngestion, name: str = "items") -> list[dict[str, Any]]:
    return ingestion.store.cycles(name)


# -- progress resets failure -------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("share", [0.2, 0.5])
def test_a_source_that_fails_now_and_then_still_completes_its_cycles(
    database_url: str, tmp_path: Path, share: float
) -> None:
    # Given a source of 100 items, 5 a page, where a share of next() calls fail at random
    source = ShiftingSource(names(100), fail_share=share)
    ingestion = ingestion_with(
        database_url,
        tmp_path,
        PageNumberProvider("items", source),
        burst_length=0.05,
        backoff=[0.01, 0.01, 0.01, 0.01],
    )
    # When it changes between two cycles
    for _ in range(2):
        reports = ingestion.run_cycle("items")
        assert reports[-1].outcome == "done", [r.reason for r in reports][-3:]
        source.names = [n for n in source.names if not n.endswith("7")] + ["svc-new"]
    # Then cycles complete, none was cancelled, and the catalog is the source
    assert source.failures > 5
    source.fail_share = 0.0
    ingestion.run_cycle("items")
    assert catalog_is_source(ingestion, source)
    assert CycleStatus.CANCELLED not in {c["status"] for c in cycles(ingestion)}


def catalog_is_source(ingestion: IncrementalIngestion, source: ShiftingSource) -> bool:
    return set(ingestion.catalog.refs("items")) == source.refs()


@pytest.mark.timeout(60)
def test_the_cycle_is_cancelled_only_after_no_progress_through_the_whole_backoff_list(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(20), fail_share=1.0)
    ingestion = ingestion_with(
        database_url, tmp_path, PageNumberProvider("items", source), backoff=[0.01, 0.01]
    )
    reports = ingestion.run_cycle("items")
    # three bursts without a page (each asked three times: page_retries is 2), two backoff
    # steps, then the cycle starts over
    assert [r.outcome for r in reports] == ["failed"] * 3
    assert source.calls == 9
    assert [c["status"] for c in cycles(ingestion)] == [CycleStatus.RUNNING, CycleStatus.CANCELLED]


@pytest.mark.timeout(60)
def test_a_burst_that_committed_pages_before_failing_starts_the_count_again(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(20))
    provider = PageNumberProvider("items", source)
    ingestion = ingestion_with(
        database_url, tmp_path, provider, backoff=[0.01, 0.01], page_retries=0
    )
    calls = {"n": 0}
    original = provider.next

    def fails_every_third(context: Any, cursor: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ConnectionError("the source hiccuped")
        return original(context, cursor)

    provider.next = fails_every_third  # type: ignore[method-assign]
    reports = ingestion.run_cycle("items")
    assert reports[-1].outcome == "done"
    failed = [r for r in reports if r.outcome == "failed"]
    assert len(failed) >= 2  # more failures than the backoff list has steps, yet no cancel
    assert all(r.next is not None and r.next.action is Action.BACKOFF for r in failed)
    assert [c["status"] for c in cycles(ingestion)] == [CycleStatus.COMPLETED]
    assert catalog_is_source(ingestion, source)


# -- refusals park -----------------------------------------------------------------------------


class RefusingProvider(PageNumberProvider):
    refuse = True

    def next(self, context: ShiftingSource, cursor: dict[str, int] | None = None) -> Any:
        if self.refuse:
            raise SourceRefused("the source refused the credentials in TEST_TOKEN: replace them")
        return super().next(context, cursor)


@pytest.mark.timeout(60)
def test_a_refusal_parks_the_provider_until_an_operator_starts_it(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(10))
    provider = RefusingProvider("items", source)
    ingestion = ingestion_with(database_url, tmp_path, provider, backoff=[0.01])
    reports = ingestion.run_cycle("items")
    # The first refusal parks: no backoff step spent, the cycle closed, the error shown
    assert [r.outcome for r in reports] == ["failed"]
    status = ingestion.store.status("items")
    assert status.action is Action.PARKED and status.attempts == 0
    assert status.last_error is not None and "refused the credentials" in status.last_error
    assert [c["status"] for c in cycles(ingestion)] == [CycleStatus.CANCELLED]
    # Nothing announces a parked provider, however long it waits
    assert ingestion.store.due_steps(["items"], resend_after=timedelta(0)) == []
    # When the operator fixed the credentials and starts it, a new cycle runs
    provider.refuse = False
    reports = ingestion.run_cycle("items")
    assert reports[-1].outcome == "done"
    assert catalog_is_source(ingestion, source)


# -- leases --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_burst_frozen_past_its_lease_commits_nothing(database_url: str, tmp_path: Path) -> None:
    # Given a burst that claimed its step and committed a page
    source = ShiftingSource(names(20))
    ingestion = ingestion_with(database_url, tmp_path, PageNumberProvider("items", source))
    doorbell = ingestion.store.start("items")
    lease = timedelta(seconds=1)
    claim = ingestion.store.claim("items", doorbell.ticket, OWNER, lease, _options(ingestion))
    page = prepare_page("items", _page(1), 1)
    ingestion.store.commit_page(claim, page, 1, lease)  # type: ignore[arg-type]
    # When it is frozen past its lease (no other worker took the step yet)
    time.sleep(1.5)
    # Then it can commit nothing more, and cannot renew its lease
    with pytest.raises(LeaseLost):
        ingestion.store.commit_page(claim, prepare_page("items", _page(2), 2), 2, lease)  # type: ignore[arg-type]
    assert not ingestion.store.renew_lease(claim, lease)  # type: ignore[arg-type]
    assert ingestion.store.checkpoints("items")[0]["sequence"] == 1


class _LimitWhileDescribed(Exception):
    """A failure whose description meets the burst's soft time limit: the limit's signal
    arrives while the burst is recording how it failed (as it does in a worker resumed long
    after it was frozen)."""

    def __str__(self) -> str:
        raise SoftTimeLimitExceeded()


@pytest.mark.timeout(60)
def test_a_time_limit_met_while_recording_a_failure_ends_the_burst_interrupted(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ShiftingSource(names(20))
    provider = PageNumberProvider("items", source)
    ingestion = ingestion_with(database_url, tmp_path, provider, page_retries=0)

    def fails(context: Any, cursor: Any = None) -> Any:
        raise _LimitWhileDescribed()

    provider.next = fails  # type: ignore[method-assign]
    doorbell = ingestion.store.start("items")
    with caplog.at_level(logging.INFO, logger="ingestion"):
        report = ingestion.engine.run_step("items", doorbell.ticket, OWNER)
    assert report.outcome is BurstOutcome.INTERRUPTED
    assert "time limit passed while it was recording" in (report.reason or "")
    # The burst's closing line is logged, and the step is left to its lease (taken over later)
    assert any("outcome=interrupted" in r.getMessage() for r in caplog.records)
    [burst] = ingestion.store.bursts("items")
    assert burst["outcome"] == BurstOutcome.RUNNING


def _options(ingestion: IncrementalIngestion) -> Any:
    return ingestion.registered("items").options


def _page(number: int) -> EntityIteratorResult[Any]:
    return EntityIteratorResult(
        done=False,
        entities=[DeferredEntity(component(f"page{number}-{i}")) for i in range(3)],
        cursor={"page": number + 1},
    )


@pytest.mark.timeout(60)
def test_the_heartbeat_keeps_the_lease_of_a_burst_slower_than_it(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(4))  # one page, read for more than twice the lease
    provider = PageNumberProvider("items", source)
    original = provider.next

    def slow(context: Any, cursor: Any = None) -> Any:
        time.sleep(2.2 * LEASE)  # more than twice the lease
        return original(context, cursor)

    provider.next = slow  # type: ignore[method-assign]
    ingestion = ingestion_with(database_url, tmp_path, provider, burst_length=60)
    reports = ingestion.run_cycle("items")
    assert [r.outcome for r in reports] == ["done"]
    assert catalog_is_source(ingestion, source)


@pytest.mark.timeout(60)
def test_a_lost_burst_that_had_made_progress_is_retried_at_once(
    database_url: str, tmp_path: Path
) -> None:
    # Given a burst that committed a page, then vanished (its worker was killed)
    source = ShiftingSource(names(20))
    ingestion = ingestion_with(
        database_url, tmp_path, PageNumberProvider("items", source), backoff=[3600]
    )
    doorbell = ingestion.store.start("items")
    lease = timedelta(seconds=1)
    claim = ingestion.store.claim("items", doorbell.ticket, OWNER, lease, _options(ingestion))
    ingestion.store.commit_page(claim, prepare_page("items", _page(1), 1), 1, lease)  # type: ignore[arg-type]
    # When its lease has run out and the reconciler announces the step again
    due = wait_until(
        lambda: ingestion.store.due_steps(["items"], resend_after=timedelta(0)),
        timeout=10,
        what="the lost step announced",
    )
    report = ingestion.engine.run_step("items", due[0].ticket, "test/other")
    # Then the lost burst is recorded, and the next step is due now, no backoff spent
    assert report.outcome == "lost" and report.next is not None
    assert report.next.countdown < 1 and report.next.action is Action.BACKOFF
    assert ingestion.store.status("items").attempts == 0
    [lost] = [b for b in ingestion.store.bursts("items") if b["outcome"] == "lost"]
    assert lost["pages"] == 1
    # And its error record names the page it was on: the one after its last commit
    [error] = ingestion.errors("items", kind=ErrorKind.BURST.value)
    assert error["page"] == 2 and "burst lost" in error["message"]


# -- what the operator sees ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_status_shows_the_last_error_of_the_open_cycle_only(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(10))
    provider = PageNumberProvider("items", source)
    ingestion = ingestion_with(database_url, tmp_path, provider, backoff=[0.01], page_retries=0)
    original = provider.next
    failed = {"once": False}

    def fails_once(context: Any, cursor: Any = None) -> Any:
        if not failed["once"]:
            failed["once"] = True
            raise ConnectionError("a passing failure")
        return original(context, cursor)

    provider.next = fails_once  # type: ignore[method-assign]
    ingestion.run_cycle("items")
    assert "a passing failure" in (ingestion.store.status("items").last_error or "")
    ingestion.run_cycle("items")  # a clean cycle
    assert ingestion.store.status("items").last_error is None
    history = ingestion.errors("items", kind=ErrorKind.BURST.value)
    assert len(history) == 1 and history[0]["page"] == 1


@pytest.mark.timeout(60)
def test_a_page_that_fails_as_a_whole_keeps_its_rejected_entities_with_its_number(
    database_url: str, tmp_path: Path
) -> None:
    class Provider(PageNumberProvider):
        def next(self, context: ShiftingSource, cursor: Any = None) -> Any:
            number = (cursor or {"page": 1})["page"]
            if number == 2:
                bad = component("Not A Valid Name")
                # A cursor JSON cannot encode fails the page after its entities were checked
                return EntityIteratorResult(
                    done=False, entities=[DeferredEntity(bad)], cursor={"page": {2, 3}}
                )
            return super().next(context, cursor)

    source = ShiftingSource(names(10))
    ingestion = ingestion_with(
        database_url, tmp_path, Provider("items", source), backoff=[3600], burst_length=5
    )
    doorbell = ingestion.store.start("items")
    report = ingestion.engine.run_step("items", doorbell.ticket, OWNER)
    assert report.outcome == "failed" and report.pages == 1
    [burst] = ingestion.errors("items", kind=ErrorKind.BURST.value)
    assert burst["page"] == 2 and "JSON cannot encode" in burst["message"]
    [entity] = ingestion.errors("items", kind=ErrorKind.ENTITY.value)
    assert entity["page"] == 2 and entity["rule"] == "metadata.name"
    assert entity["entity"] == "Not A Valid Name"
    assert ref("svc-000") in set(ingestion.catalog.refs("items"))
