"""The sweep removes only what is gone: removal checks, grace cycles, and guards that wait
for a person. In-process cycles against real SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingestion import Action, CycleStatus, IncrementalIngestion
from ingestion.engine import BurstReport
from tests.support.ingestions import make_ingestion
from tests.support.sources import (
    CheckingProvider,
    PageNumberProvider,
    ShiftingSource,
    names,
    ref,
)

FAST: dict[str, Any] = {"burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}


def delete_first(source: ShiftingSource) -> None:
    del source.names[0]


def catalog(ingestion: IncrementalIngestion, name: str = "items") -> set[str]:
    return set(ingestion.catalog.refs(name))


def cycle(ingestion: IncrementalIngestion, name: str = "items") -> list[BurstReport]:
    reports = ingestion.run_cycle(name)
    assert reports[-1].outcome == "done", [r.reason for r in reports]
    return reports


def never_removes_the_living(
    ingestion: IncrementalIngestion, source: ShiftingSource, name: str = "items"
) -> list[set[str]]:
    """An observer asserting, at every sweep, that nothing removed is still in the source."""
    before: list[set[str]] = []
    removed_live: list[set[str]] = []

    def observe(report: BurstReport) -> None:
        after = catalog(ingestion, name)
        if before and report.sweep is not None:
            removed_live.append((before[-1] - after) & source.refs())
        before.append(after)

    ingestion.observers.append(observe)
    return removed_live


# -- the fault: page numbers skip an item when an earlier one is deleted -----------------------


@pytest.mark.timeout(60)
def test_without_checks_a_deletion_mid_cycle_removes_a_live_item(
    database_url: str, tmp_path: Path
) -> None:
    # Given a catalog of 20 items read 5 a page
    source = ShiftingSource(names(20))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(PageNumberProvider("items", source), **FAST)
    cycle(ingestion)
    # When the first item is deleted after page 1 of the next cycle has been read
    source.before_page[2] = delete_first
    cycle(ingestion)
    # Then the item that moved up to page 1 was never seen, and the sweep removed it
    assert ref("svc-005") in source.refs()
    assert ref("svc-005") not in catalog(ingestion)


@pytest.mark.timeout(60)
def test_removal_checks_keep_what_the_source_still_holds(database_url: str, tmp_path: Path) -> None:
    # Given a provider that checks removals, one candidate a batch, one page or batch a burst
    source = ShiftingSource(names(20))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        CheckingProvider("items", source),
        burst_length=0.001,
        removal_check_batch=1,
        **FAST,
    )
    removed_live = never_removes_the_living(ingestion, source)
    cycle(ingestion)
    assert source.checked == []  # a first cycle has nothing to remove
    # When the first item is deleted after page 1 has been read, and another is renamed
    source.before_page[2] = delete_first

    def rename(s: ShiftingSource) -> None:
        s.names[s.names.index("svc-017")] = "svc-017-renamed"

    source.before_page[3] = rename
    phases: list[str] = []

    def phase(report: BurstReport) -> None:
        current = ingestion.store.status("items").current_cycle
        phases.append(current["phase"] if current else "-")

    ingestion.observers.append(phase)
    reports = cycle(ingestion)
    # Then the two items page 1 did not see (one skipped, one renamed away) were asked about,
    # a batch a burst, in a checking phase between the last page and the sweep
    assert source.checked == [ref("svc-005"), ref("svc-017")]
    assert "check" in phases
    checks = [r for r in reports if r.checked]
    assert [r.checked for r in checks] == [1, 1]
    # And only what is gone was removed; the renamed item is there under its new name, and
    # the item deleted after its page was read goes with the next cycle
    done = ingestion.store.cycles("items")[0]
    assert (done["status"], done["checked"], done["kept"], done["removed"]) == (
        CycleStatus.COMPLETED,
        2,
        1,
        1,
    )
    assert catalog(ingestion) == source.refs() | {ref("svc-000")}
    cycle(ingestion)
    assert catalog(ingestion) == source.refs()
    assert removed_live == [set(), set(), set()]


@pytest.mark.timeout(60)
def test_checks_resume_from_the_database_after_a_failure(database_url: str, tmp_path: Path) -> None:
    source = ShiftingSource(names(12))
    ingestion = make_ingestion(database_url, tmp_path)
    provider = CheckingProvider("items", source)
    # page_retries=0: the failing batch fails its burst, whether or not the burst's 1 ms is up
    ingestion.add_provider(
        provider, burst_length=0.001, removal_check_batch=1, page_retries=0, **FAST
    )
    cycle(ingestion)
    del source.names[:4]
    calls = {"n": 0}
    original = provider.check_removals

    def flaky(context: Any, candidates: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("the source failed during the checks")
        return original(context, candidates)

    provider.check_removals = flaky  # type: ignore[method-assign]
    reports = cycle(ingestion)
    assert [r.outcome for r in reports].count("failed") == 1
    # each candidate was asked about once, though a burst failed between two of them
    assert sorted(source.checked) == sorted(ref(n) for n in names(4))
    assert catalog(ingestion) == source.refs()


# -- grace cycles ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_entity_goes_only_after_missing_from_n_completed_cycles(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(10))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        PageNumberProvider("items", source), remove_after_missed_cycles=3, **FAST
    )
    options = ingestion.registered("items").options
    cycle(ingestion)
    source.names.remove("svc-003")
    for missed in (1, 2):
        cycle(ingestion)
        assert ref("svc-003") in catalog(ingestion)
        assert ingestion.store.status("items", options).waiting_removals == 1
        waiting = ingestion.store.waiting_removals("items", options)
        assert [w["ref"] for w in waiting] == [ref("svc-003")], missed
    cycle(ingestion)
    assert catalog(ingestion) == source.refs()
    assert ingestion.store.status("items", options).waiting_removals == 0


@pytest.mark.timeout(60)
def test_an_entity_that_comes_back_within_its_grace_stays(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(10))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        PageNumberProvider("items", source), remove_after_missed_cycles=2, **FAST
    )
    cycle(ingestion)
    source.names.remove("svc-003")
    cycle(ingestion)
    source.names.append("svc-003")
    cycle(ingestion)
    source.names.remove("svc-003")
    cycle(ingestion)  # missed once again: the count started over
    assert ref("svc-003") in catalog(ingestion)
    cycle(ingestion)
    assert ref("svc-003") not in catalog(ingestion)


@pytest.mark.timeout(60)
def test_cancelled_cycles_do_not_count_as_missed(database_url: str, tmp_path: Path) -> None:
    source = ShiftingSource(names(10))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        PageNumberProvider("items", source), remove_after_missed_cycles=2, **FAST
    )
    cycle(ingestion)
    source.names.remove("svc-003")
    for _ in range(3):
        ingestion.start("items")
        ingestion.cancel("items")
    cycle(ingestion)
    assert ref("svc-003") in catalog(ingestion)  # one completed cycle missed it, not two


# -- guards that wait for a person ---------------------------------------------------------


@pytest.fixture
def held(database_url: str, tmp_path: Path) -> tuple[IncrementalIngestion, ShiftingSource]:
    """A guarded provider whose source lost 60% of its items: the sweep is held back."""
    source = ShiftingSource(names(20))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        PageNumberProvider("items", source),
        reject_removals_above_percentage=10,
        hold_removals_until_approved=True,
        **FAST,
    )
    cycle(ingestion)
    del source.names[:12]
    cycle(ingestion)
    return ingestion, source


@pytest.mark.timeout(60)
def test_held_removals_stay_through_later_cycles_until_approved(
    held: tuple[IncrementalIngestion, ShiftingSource],
) -> None:
    ingestion, source = held
    status = ingestion.store.status("items")
    assert status.blocked_sweep is not None and status.blocked_sweep["count"] == 12
    assert "until an operator approves or dismisses them" in status.blocked_sweep["reason"]
    # Later cycles keep ingesting (a new item comes in) and remove nothing held
    source.names.append("svc-new")
    for _ in range(2):
        cycle(ingestion)
    assert ref("svc-new") in catalog(ingestion)
    assert len(catalog(ingestion)) == 21
    assert len(ingestion.store.held_removals("items", limit=100)) == 12
    # When an operator approves them, they go at once and the block is cleared
    assert ingestion.store.approve_held_removals("items") == 12
    assert catalog(ingestion) == source.refs()
    assert ingestion.store.status("items").blocked_sweep is None


@pytest.mark.timeout(60)
def test_dismissed_removals_are_kept_and_the_block_cleared(
    held: tuple[IncrementalIngestion, ShiftingSource],
) -> None:
    ingestion, _ = held
    assert ingestion.store.dismiss_held_removals("items") == 12
    assert len(catalog(ingestion)) == 20
    assert ingestion.store.status("items").blocked_sweep is None
    assert ingestion.store.held_removals("items") == []


@pytest.mark.timeout(60)
def test_without_the_hold_a_later_cycle_confirms_and_removes(
    database_url: str, tmp_path: Path
) -> None:
    source = ShiftingSource(names(20))
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        PageNumberProvider("items", source), reject_removals_above_percentage=10, **FAST
    )
    cycle(ingestion)
    del source.names[:12]
    cycle(ingestion)
    assert len(catalog(ingestion)) == 20
    cycle(ingestion)
    assert catalog(ingestion) == source.refs()
    assert ingestion.store.status("items").action is Action.REST
