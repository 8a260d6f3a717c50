"""``RetryAfter`` (a source asks to wait) and ``Rejection`` (a source item that is no entity).

The pure transition is tested alone; the engine path runs real bursts against SQLite and
Postgres with a plain provider that raises on cue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestion import Action, DeferredEntity, EntityIteratorResult, IncrementalEntityProvider
from ingestion.errors import RetryAfter
from ingestion.preparing import prepare_page
from ingestion.provider import Rejection
from ingestion.state import CycleStatus, Schedule, after_rate_limit
from ingestion.store import ErrorKind
from providers.synthetic import service_entity
from tests.support.ingestions import make_ingestion

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

# -- the pure transition ------------------------------------------------------------------


def test_a_rate_limit_repeats_the_ingest_step_after_the_wait_without_counting_an_attempt() -> None:
    transition = after_rate_limit(Schedule(Action.INGEST, NOW, 0), NOW, timedelta(seconds=90))

    assert transition.schedule == Schedule(Action.INGEST, NOW + timedelta(seconds=90), 0)
    assert transition.close_cycle is None
    assert transition.open_cycle is False


def test_a_rate_limit_during_backoff_keeps_the_attempts_spent_so_far() -> None:
    transition = after_rate_limit(Schedule(Action.BACKOFF, NOW, 2), NOW, timedelta(minutes=10))

    assert transition.schedule == Schedule(Action.BACKOFF, NOW + timedelta(minutes=10), 2)
    assert transition.close_cycle is None


def test_a_negative_wait_means_now_and_a_rest_schedule_becomes_ingest() -> None:
    transition = after_rate_limit(Schedule(Action.REST, NOW, 0), NOW, timedelta(seconds=-5))

    assert transition.schedule == Schedule(Action.INGEST, NOW, 0)
    assert transition.open_cycle is False


@pytest.mark.parametrize("seconds", [-3.0, math.nan, 0.0])
def test_retry_after_takes_negative_or_nan_seconds_as_now(seconds: float) -> None:
    assert RetryAfter(seconds, "limit").seconds == 0.0


def test_retry_after_says_its_reason_and_wait() -> None:
    assert (
        str(RetryAfter(12.5, "rate limit of example"))
        == "rate limit of example (retry after 12.5s)"
    )


# -- through the engine -------------------------------------------------------------------


class ScriptedProvider(IncrementalEntityProvider[dict[str, int], None]):
    """Pages of two services each; ``script[call]`` may raise instead of answering."""

    def __init__(self, name: str, pages: int, script: dict[int, BaseException]) -> None:
        self.name = name
        self.pages = pages
        self.script = script
        self.calls = 0

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(
        self, context: None, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[dict[str, int]]:
        self.calls += 1
        if self.calls in self.script:
            raise self.script[self.calls]
        page = (cursor or {"page": 0})["page"]
        return EntityIteratorResult(
            done=page + 1 >= self.pages,
            entities=[DeferredEntity(service_entity(2 * page + i)) for i in range(2)],
            cursor={"page": page + 1},
        )


def test_a_rate_limited_burst_keeps_its_pages_and_the_cycle_resumes_after_the_wait(
    database_url: str, tmp_path: Path
) -> None:
    # Given a provider that is rate limited on its third page, and a backoff of 100 s
    ingestion = make_ingestion(database_url, tmp_path)
    provider = ScriptedProvider("limited", 4, {3: RetryAfter(0.5, "example rate limit")})
    ingestion.add_provider(provider, burst_length=60, burst_interval=0, backoff=[100])

    # When a whole cycle runs
    started = time.monotonic()
    reports = ingestion.run_cycle("limited")

    # Then the burst stopped after two committed pages, waited 0.5 s, not 100 s, and the
    # next burst read the rest of the source
    assert time.monotonic() - started < 20
    assert [r.outcome for r in reports] == ["waiting", "done"]
    assert reports[0].pages == 2
    assert reports[0].next is not None and reports[0].next.action is Action.INGEST
    assert 0 < reports[0].next.countdown <= 0.5
    assert ingestion.catalog.count("limited") == 8
    bursts = ingestion.store.bursts("limited")
    assert [b["outcome"] for b in reversed(bursts)] == ["waiting", "done"]
    assert "example rate limit (retry after 0.5s)" in bursts[-1]["error"]
    assert ingestion.errors("limited") == []  # a wait is no failure
    status = ingestion.store.status("limited")
    assert status.last_error is None
    cycles = ingestion.store.cycles("limited")
    assert [c["status"] for c in cycles] == [CycleStatus.COMPLETED.value]


def test_a_rate_limit_after_a_failure_spends_no_further_backoff_step(
    database_url: str, tmp_path: Path
) -> None:
    # Given a provider that fails once, then is rate limited for a minute
    ingestion = make_ingestion(database_url, tmp_path)
    script: dict[int, BaseException] = {
        1: RuntimeError("the source is down"),
        2: RetryAfter(60, "example rate limit"),
    }
    # page_retries=0: the failure fails its burst, so that the rate limit meets a backoff step
    ingestion.add_provider(
        ScriptedProvider("limited", 2, script),
        burst_interval=0,
        backoff=[0.01, 100, 100],
        page_retries=0,
    )
    ingestion.store.ensure_providers(["limited"])
    doorbell = ingestion.store.start("limited")

    failed = ingestion.engine.run_step("limited", doorbell.ticket, "test/1")
    assert failed.outcome == "failed" and failed.next is not None
    time.sleep(failed.next.countdown)  # the 0.01 s backoff step

    # When the backoff burst is rate limited
    waiting = ingestion.engine.run_step("limited", failed.next.ticket, "test/1")

    # Then the provider waits the minute in the same backoff step, attempts unchanged
    assert waiting.outcome == "waiting"
    assert waiting.next is not None
    assert 55 < waiting.next.countdown <= 60
    status = ingestion.store.status("limited")
    assert status.action is Action.BACKOFF
    assert status.attempts == 1
    assert [e["kind"] for e in ingestion.errors("limited")] == [ErrorKind.BURST.value]

    # And an operator trigger runs it at once; it completes the cycle
    doorbell = ingestion.trigger("limited")
    done = ingestion.engine.run_step("limited", doorbell.ticket, "test/1")
    assert done.outcome == "done"
    assert ingestion.store.status("limited").attempts == 0


# -- rejections ---------------------------------------------------------------------------


def test_prepare_page_turns_rejections_into_error_records_beside_the_entities() -> None:
    result = EntityIteratorResult(
        done=True,
        entities=[DeferredEntity(service_entity(1))],
        rejections=[Rejection("teams/a.yaml", "line 3, column 7: bad indentation", "yaml")],
    )

    page = prepare_page("files", result, 4)

    assert [e.ref for e in page.entities] == ["component:default/service-0000001"]
    [problem] = page.rejected
    assert problem.entity == "teams/a.yaml"
    assert problem.rule == "yaml"
    assert problem.message == (
        "provider 'files', page 4, teams/a.yaml: line 3, column 7: bad indentation"
    )


def test_something_else_than_a_rejection_is_itself_rejected_with_its_type() -> None:
    result = EntityIteratorResult(done=True, rejections=["not a rejection"])  # type: ignore[list-item]

    [problem] = prepare_page("files", result, 1).rejected

    assert problem.rule == "rejection"
    assert "expected Rejection, got str" in problem.message


class RejectingProvider(IncrementalEntityProvider[int, None]):
    def get_provider_name(self) -> str:
        return "rejecting"

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(self, context: None, cursor: int | None = None) -> EntityIteratorResult[int]:
        return EntityIteratorResult(
            done=True,
            entities=[DeferredEntity(service_entity(n)) for n in range(3)],
            rejections=[Rejection("broken.yaml", "line 2: could not find expected ':'", "yaml")],
        )


def test_a_rejection_is_stored_as_an_entity_error_and_the_page_commits(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(RejectingProvider())

    [report] = ingestion.run_cycle("rejecting")

    assert report.outcome == "done"
    assert report.rejected == 1
    assert ingestion.catalog.count("rejecting") == 3
    [error] = ingestion.errors("rejecting")
    assert error["kind"] == ErrorKind.ENTITY.value
    assert error["entity"] == "broken.yaml"
    assert error["rule"] == "yaml"
    assert error["message"].endswith("broken.yaml: line 2: could not find expected ':'")
    assert ingestion.store.cycles("rejecting")[0]["rejected"] == 1
