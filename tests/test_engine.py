"""The engine in this process against real SQLite and Postgres: cycles, sweeps, errors, guards.

Bursts run through ``IncrementalIngestion.run_cycle`` or ``engine.run_step``: the same code a
worker runs, without a broker in between. Worker processes are exercised in test_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ingestion import (
    PROVIDER_ANNOTATION,
    Action,
    CycleStatus,
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    IncrementalIngestion,
)
from ingestion.store import Doorbell
from providers.synthetic import SourceServer, SyntheticProvider, SyntheticSource, service_entity
from tests.support.ingestions import body_refs, make_ingestion
from tests.support.sources import component, ref
from tests.support.waiting import wait_until

OWNER = "test/1"


def catalog_refs(ingestion: IncrementalIngestion, provider: str) -> set[str]:
    return set(ingestion.catalog.refs(provider))


def step(ingestion: IncrementalIngestion, doorbell: Doorbell) -> Any:
    """Wait until the step is due (bounded by its own countdown), then run it."""
    time.sleep(doorbell.countdown)
    return ingestion.engine.run_step(doorbell.provider, doorbell.ticket, OWNER)


class PagesProvider(IncrementalEntityProvider[dict[str, int], str]):
    """Serves fixed pages from memory, with hooks to misbehave on a given page."""

    def __init__(
        self,
        name: str,
        pages: list[list[Any]],
        *,
        fail: dict[int, int] | None = None,
        cursor_for: Callable[[int], Any] | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.pages = pages
        self.fail = dict(fail or {})
        self.cursor_for = cursor_for
        self.on_page = on_page
        self.requested: list[int] = []

    def get_provider_name(self) -> str:
        return self.name

    def around(self, burst: Callable[[str], Any]) -> None:
        burst("context")

    def next(self, context: str, cursor: dict[str, int] | None = None) -> EntityIteratorResult[Any]:
        assert context == "context"
        page = (cursor or {"page": 0})["page"]
        self.requested.append(page)
        if self.on_page is not None:
            self.on_page(page)
        if self.fail.get(page, 0) > 0:
            self.fail[page] -= 1
            raise ConnectionError(f"source unreachable at page {page}")
        next_cursor = self.cursor_for(page) if self.cursor_for else {"page": page + 1}
        return EntityIteratorResult(
            done=page + 1 >= len(self.pages),
            entities=[DeferredEntity(e) if isinstance(e, dict) else e for e in self.pages[page]],
            cursor=next_cursor,
        )


def numbered_pages(pages: int, per_page: int, start: int = 0) -> list[list[Any]]:
    return [
        [service_entity(start + p * per_page + i) for i in range(per_page)] for p in range(pages)
    ]


@pytest.fixture
def synthetic(
    database_url: str, tmp_path: Path, source_server: SourceServer
) -> IncrementalIngestion:
    return _synthetic(database_url, tmp_path, source_server)


def _synthetic(url: str, tmp_path: Path, source_server: SourceServer) -> IncrementalIngestion:
    ingestion = make_ingestion(url, tmp_path)
    ingestion.add_provider(
        SyntheticProvider("services", source_server.url, per_page=50),
        burst_length=0.15,
        burst_interval=0,
        backoff=[0.2, 0.3],
    )
    return ingestion


# Location keys are the provider's own text: these need quoting in an array literal, or look
# like something else in one (a null, a separator, a brace).
ODD_LOCATIONS = [
    'url:"quoted"',
    "back\\slash",
    "a,b",
    "NULL",
    "",
    " spaced ",
    "{braced}",
    "é",
    None,
]


@pytest.mark.timeout(60)
def test_location_keys_of_any_text_are_written_and_rewritten_as_they_are(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    names = [f"odd-{n}" for n in range(len(ODD_LOCATIONS))]

    def page(locations: list[str | None], version: int) -> list[Any]:
        return [
            DeferredEntity(component(name, version), location)
            for name, location in zip(names, locations, strict=True)
        ]

    provider = PagesProvider("odd", [page(ODD_LOCATIONS, 0)])
    ingestion.add_provider(provider, burst_interval=0, rest_length=3600)
    assert ingestion.run_cycle("odd")[-1].outcome == "done"
    assert [ingestion.catalog.get(ref(n)).location_key for n in names] == ODD_LOCATIONS  # type: ignore[union-attr]
    # Changed entities are rewritten with their keys, each moved to another's
    moved = ODD_LOCATIONS[1:] + ODD_LOCATIONS[:1]
    provider.pages = [page(moved, 1)]
    [report] = ingestion.run_cycle("odd")
    assert report.written == len(names)
    assert [ingestion.catalog.get(ref(n)).location_key for n in names] == moved  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_a_full_cycle_over_many_bursts_ends_with_the_catalog_equal_to_the_source(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    source.delay = 0.03  # 12 pages of 30 ms and more: several bursts of 150 ms
    reports = synthetic.run_cycle("services")
    assert [r.outcome for r in reports][-1] == "done"
    assert len(reports) >= 2, "the cycle should take several bursts"
    assert all(r.outcome == "continued" for r in reports[:-1])
    assert catalog_refs(synthetic, "services") == source.refs()
    sample = synthetic.catalog.get("Component:default/SERVICE-0000007")
    assert sample is not None
    assert sample.entity["metadata"]["annotations"][PROVIDER_ANNOTATION] == "services"
    assert sample.location_key == "synthetic:services"
    marks = synthetic.store.checkpoints("services", limit=1000)
    assert sorted(m["sequence"] for m in marks) == list(range(1, 13))
    assert json.loads(max(marks, key=lambda m: m["sequence"])["cursor"]) == {"page": 13}
    status = synthetic.store.status("services")
    assert status.action is Action.REST
    assert status.last_completed_cycle is not None
    assert status.last_completed_cycle["entities"] == 600
    assert status.last_completed_cycle["bursts"] == len(reports)


@pytest.mark.timeout(60)
def test_a_second_cycle_after_the_source_drops_10_and_adds_5_percent_matches_it_again(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    synthetic.run_cycle("services")
    before = catalog_refs(synthetic, "services")
    source.drop(0.10)
    source.grow(0.05)
    assert len(before - source.refs()) == 60 and len(source.refs() - before) == 27
    reports = synthetic.run_cycle("services")
    assert catalog_refs(synthetic, "services") == source.refs()
    assert reports[-1].sweep is not None and reports[-1].sweep.removed == 60
    cycle = synthetic.store.cycles("services")[0]
    assert cycle["status"] == CycleStatus.COMPLETED
    assert (cycle["written"], cycle["unchanged"], cycle["removed"]) == (27, 540, 60)
    # The sweep removed the bodies with the rows, and the added entities have theirs
    assert body_refs(synthetic) == source.refs()


@pytest.mark.timeout(60)
def test_deleting_a_providers_entities_deletes_their_bodies(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    synthetic.run_cycle("services")
    assert body_refs(synthetic) == source.refs()
    assert synthetic.store.delete_entities("services") == 600
    assert synthetic.catalog.count() == 0
    assert body_refs(synthetic) == set()


@pytest.mark.timeout(60)
def test_unchanged_entities_are_marked_without_being_rewritten(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    synthetic.run_cycle("services")
    first = synthetic.catalog.get("component:default/service-0000001")
    reports = synthetic.run_cycle("services")
    assert sum(r.written for r in reports) == 0
    assert sum(r.unchanged for r in reports) == 600
    again = synthetic.catalog.get("component:default/service-0000001")
    assert first is not None and again is not None
    assert again.updated_at == first.updated_at
    source.version = 1
    reports = synthetic.run_cycle("services")
    assert sum(r.written for r in reports) == 600
    changed = synthetic.catalog.get("component:default/service-0000001")
    assert changed is not None and changed.entity["spec"]["version"] == 1
    assert changed.updated_at > first.updated_at
    assert changed.created_at == first.created_at


def _versions(ingestion: IncrementalIngestion, table: str) -> dict[str, str]:
    """Each row's Postgres version (``xmin``: the transaction that wrote it), by ref."""
    with ingestion.store.db.sql_engine.connect() as conn:
        rows = conn.execute(text(f"SELECT ref, xmin::text FROM {table}")).all()
    return dict(rows)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_marking_an_unchanged_entity_writes_no_new_version_of_its_body(
    pg_url: str, tmp_path: Path, source: SyntheticSource, source_server: SourceServer
) -> None:
    # Given a catalog of 600 entities
    ingestion = _synthetic(pg_url, tmp_path, source_server)
    ingestion.run_cycle("services")
    rows, bodies = _versions(ingestion, "catalog_entities"), _versions(ingestion, "catalog_bodies")
    assert len(rows) == len(bodies) == 600

    # When a cycle reads the same source again
    ingestion.run_cycle("services")

    # Then every entity's row has a new version (its mark), and no body has
    marked, kept = _versions(ingestion, "catalog_entities"), _versions(ingestion, "catalog_bodies")
    assert all(marked[ref] != rows[ref] for ref in rows)
    assert kept == bodies

    # And a cycle over changed entities writes their bodies
    source.version = 1
    ingestion.run_cycle("services")
    rewritten = _versions(ingestion, "catalog_bodies")
    assert rewritten.keys() == bodies.keys()
    assert all(rewritten[ref] != bodies[ref] for ref in bodies)


@pytest.mark.timeout(60)
def test_failures_back_off_step_by_step_then_cancel_and_start_over(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    synthetic.run_cycle("services")  # a completed cycle: its entities must survive
    doorbell = synthetic.store.start("services")
    first_cycle = doorbell.cycle_id
    source.fail_requests = 1000
    seen = []
    for _ in synthetic.registered("services").options.backoff:
        report = step(synthetic, doorbell)
        assert report.outcome == "failed"
        doorbell = report.next
        status = synthetic.store.status("services")
        seen.append((status.action, status.attempts, round(doorbell.countdown, 1)))
        assert "provider 'services'" in (status.last_error or "")
        assert "500" in (status.last_error or "")
        assert "Traceback" in (status.last_error or ""), "the full error is stored"
        assert doorbell.cycle_id == first_cycle
    assert seen == [(Action.BACKOFF, 1, 0.2), (Action.BACKOFF, 2, 0.3)]
    report = step(synthetic, doorbell)  # the last backoff step fails too
    assert report.outcome == "failed"
    status = synthetic.store.status("services")
    assert status.action is Action.INGEST and status.attempts == 0
    assert report.next is not None and report.next.cycle_id != first_cycle
    cycles = {c["id"]: c for c in synthetic.store.cycles("services")}
    assert cycles[first_cycle]["status"] == CycleStatus.CANCELLED
    assert cycles[first_cycle]["removed"] == 0
    assert synthetic.catalog.count("services") == 600, "a cancelled cycle never sweeps"
    burst_errors = synthetic.errors("services", kind="burst")
    assert len(burst_errors) == 3
    source.fail_requests = 0
    synthetic.run_cycle("services")
    assert catalog_refs(synthetic, "services") == source.refs()


@pytest.mark.timeout(60)
def test_a_retry_resumes_from_the_last_committed_cursor(database_url: str, tmp_path: Path) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    # page_retries=0: the page that fails fails its burst, rather than being asked again in it
    provider = PagesProvider("pages", numbered_pages(6, 10), fail={3: 1})
    ingestion.add_provider(provider, burst_length=10, backoff=[0.1], page_retries=0)
    reports = ingestion.run_cycle("pages")
    assert [r.outcome for r in reports] == ["failed", "done"]
    assert reports[0].pages == 3
    assert provider.requested == [0, 1, 2, 3, 3, 4, 5]
    marks = ingestion.store.checkpoints("pages")
    assert sorted(m["sequence"] for m in marks) == [1, 2, 3, 4, 5, 6]
    assert ingestion.catalog.count("pages") == 60


@pytest.fixture
def guarded(database_url: str, tmp_path: Path, source_server: SourceServer) -> IncrementalIngestion:
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(
        SyntheticProvider("services", source_server.url, per_page=50),
        burst_length=30,
        burst_interval=0,
        reject_removals_above_percentage=5,
        reject_empty_source_collections=True,
    )
    return ingestion


@pytest.mark.timeout(60)
def test_the_percentage_guard_blocks_then_a_confirming_cycle_applies_the_removals(
    guarded: IncrementalIngestion, source: SyntheticSource
) -> None:
    guarded.run_cycle("services")
    source.drop(0.10)
    reports = guarded.run_cycle("services")
    sweep = reports[-1].sweep
    assert sweep is not None and sweep.removed == 0 and sweep.blocked == 60
    assert guarded.catalog.count("services") == 600
    status = guarded.store.status("services")
    assert status.blocked_sweep is not None
    assert "60 of 600" in status.blocked_sweep["reason"]
    assert status.blocked_sweep["count"] == 60
    assert guarded.store.cycles("services")[0]["blocked"] == 60
    reports = guarded.run_cycle("services")  # still missing: confirmed
    assert reports[-1].sweep is not None and reports[-1].sweep.removed == 60
    assert catalog_refs(guarded, "services") == source.refs()
    assert guarded.store.status("services").blocked_sweep is None


@pytest.mark.timeout(60)
def test_blocked_removals_that_come_back_are_cleared(
    guarded: IncrementalIngestion, source: SyntheticSource
) -> None:
    guarded.run_cycle("services")
    removed = set(source.removed)
    source.drop(0.10)
    guarded.run_cycle("services")
    assert guarded.store.status("services").blocked_sweep is not None
    source.removed = removed  # the source recovers
    reports = guarded.run_cycle("services")
    assert reports[-1].sweep is not None and reports[-1].sweep.removed == 0
    assert guarded.store.status("services").blocked_sweep is None
    assert catalog_refs(guarded, "services") == source.refs()


@pytest.mark.timeout(60)
def test_the_empty_source_guard_keeps_everything_until_the_source_returns(
    guarded: IncrementalIngestion, source: SyntheticSource
) -> None:
    guarded.run_cycle("services")
    count = source.count
    source.count = 0
    for _ in range(2):  # an empty source is never evidence, however often it repeats
        reports = guarded.run_cycle("services")
        sweep = reports[-1].sweep
        assert sweep is not None and sweep.removed == 0 and sweep.blocked == 600
        assert guarded.catalog.count("services") == 600
        reason = guarded.store.status("services").blocked_sweep
        assert reason is not None and "no entities" in reason["reason"]
    source.count = count
    guarded.run_cycle("services")
    assert guarded.store.status("services").blocked_sweep is None
    assert catalog_refs(guarded, "services") == source.refs()


@pytest.mark.timeout(60)
def test_invalid_entities_are_rejected_alone_and_the_rest_of_the_page_commits(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    source.invalid = {5, 117}
    reports = synthetic.run_cycle("services")
    assert sum(r.rejected for r in reports) == 2
    assert catalog_refs(synthetic, "services") == source.refs()
    assert len(source.refs()) == 598
    errors = synthetic.errors("services", kind="entity")
    assert {e["entity"] for e in errors} == {"bad name 5", "bad name 117"}
    by_name = {e["entity"]: e for e in errors}
    assert by_name["bad name 5"]["page"] == 1 and by_name["bad name 117"]["page"] == 3
    for error in errors:
        assert error["rule"] == "metadata.name"
        assert error["cycle_id"] == reports[0].cycle_id
        assert "provider 'services'" in error["message"]
    cycle = synthetic.store.cycles("services")[0]
    assert cycle["rejected"] == 2 and cycle["entities"] == 598


@pytest.mark.timeout(60)
def test_a_duplicate_ref_in_one_page_keeps_the_last_and_warns(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    first, second = service_entity(1, version=1), service_entity(1, version=2)
    page = [first, service_entity(2), second, DeferredEntity({"kind": "Component"}), 42]
    ingestion.add_provider(PagesProvider("dups", [page]), burst_length=5)
    ingestion.run_cycle("dups")
    kept = ingestion.catalog.get("component:default/service-0000001")
    assert kept is not None and kept.entity["spec"]["version"] == 2
    assert ingestion.catalog.count("dups") == 2
    warnings = ingestion.errors("dups", kind="warning")
    assert len(warnings) == 1 and warnings[0]["rule"] == "duplicate"
    assert "component:default/service-0000001" in warnings[0]["message"]
    rejected = {e["rule"]: e for e in ingestion.errors("dups", kind="entity")}
    assert set(rejected) == {"apiVersion", "deferred"}
    assert rejected["apiVersion"]["entity"] == "#3"
    assert "expected DeferredEntity, got int" in rejected["deferred"]["message"]


@pytest.mark.timeout(60)
def test_a_cursor_json_cannot_encode_fails_the_burst_and_loses_nothing_committed(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    bad_from = {"value": 2}

    def cursor_for(page: int) -> Any:
        if page >= bad_from["value"]:
            return {"page": page + 1, "at": datetime.now(UTC)}
        return {"page": page + 1}

    provider = PagesProvider("cursors", numbered_pages(4, 10), cursor_for=cursor_for)
    ingestion.add_provider(provider, burst_length=10, backoff=[0.1, 0.1])
    ingestion.store.ensure_providers(["cursors"])
    doorbell = ingestion.store.start("cursors")
    report = step(ingestion, doorbell)
    assert report.outcome == "failed"
    assert report.pages == 2
    error = ingestion.store.status("cursors").last_error or ""
    assert "provider 'cursors', page 3" in error
    assert "cursor of type dict" in error or "cursor of type datetime" in error
    assert "JSON" in error
    assert ingestion.catalog.count("cursors") == 20, "the two pages before stay committed"
    assert sorted(m["sequence"] for m in ingestion.store.checkpoints("cursors")) == [1, 2]
    bad_from["value"] = 99
    report = step(ingestion, report.next)
    assert report.outcome == "done"
    assert ingestion.catalog.count("cursors") == 40
    assert provider.requested == [0, 1, 2, 2, 3]


@pytest.mark.timeout(60)
def test_garbage_from_next_fails_the_burst_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    class Garbage(PagesProvider):
        def next(self, context: str, cursor: Any = None) -> Any:
            return {"done": True, "entities": []}

    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(Garbage("garbage", [[]]), backoff=[0.1])
    reports = ingestion.run_cycle("garbage", max_bursts=1)
    assert reports[0].outcome == "failed"
    assert "next() returned dict, expected EntityIteratorResult" in (reports[0].reason or "")


@pytest.mark.timeout(60)
def test_a_ref_owned_by_another_provider_is_not_overwritten(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(PagesProvider("first", [[service_entity(1, version=1)]]))
    shared = [service_entity(1, version=2), service_entity(2)]
    ingestion.add_provider(PagesProvider("second", [shared]))
    ingestion.run_cycle("first")
    ingestion.run_cycle("second")
    owned = ingestion.catalog.get("component:default/service-0000001")
    assert owned is not None and owned.provider == "first"
    assert owned.entity["spec"]["version"] == 1
    assert ingestion.catalog.count("second") == 1
    errors = ingestion.errors("second", kind="entity")
    assert len(errors) == 1 and errors[0]["rule"] == "owner"
    assert "owned by provider 'first'" in errors[0]["message"]
    ingestion.run_cycle("second")  # its sweep never touches what it does not own
    assert ingestion.catalog.count("first") == 1


@pytest.mark.timeout(60)
def test_async_around_and_next_work(database_url: str, tmp_path: Path) -> None:
    class AsyncPages(IncrementalEntityProvider[int, str]):
        def get_provider_name(self) -> str:
            return "async"

        async def around(self, burst: Callable[[str], Any]) -> None:
            await burst("ctx")

        async def next(self, context: str, cursor: int | None = None) -> EntityIteratorResult[int]:
            await asyncio.sleep(0)
            page = cursor or 0
            return EntityIteratorResult(
                done=page == 2,
                entities=[DeferredEntity(service_entity(page * 10 + i)) for i in range(10)],
                cursor=page + 1,
            )

    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(AsyncPages())
    reports = ingestion.run_cycle("async")
    assert reports[-1].outcome == "done"
    assert ingestion.catalog.count("async") == 30


@pytest.mark.timeout(60)
def test_an_async_next_that_hangs_fails_after_the_page_timeout(
    database_url: str, tmp_path: Path
) -> None:
    class Hangs(IncrementalEntityProvider[int, None]):
        def get_provider_name(self) -> str:
            return "hangs"

        def around(self, burst: Callable[[None], Any]) -> None:
            burst(None)

        async def next(self, context: None, cursor: int | None = None) -> EntityIteratorResult[int]:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    ingestion = make_ingestion(database_url, tmp_path, page_timeout=0.3)
    ingestion.add_provider(Hangs(), backoff=[60])
    reports = ingestion.run_cycle("hangs", max_bursts=1)
    assert reports[0].outcome == "failed"
    assert "next() did not return within 0.3s" in (reports[0].reason or "")
    assert ingestion.store.status("hangs").action is Action.BACKOFF


@pytest.mark.timeout(60)
def test_around_that_never_calls_burst_is_an_error(database_url: str, tmp_path: Path) -> None:
    class Forgetful(PagesProvider):
        def around(self, burst: Callable[[str], Any]) -> None:
            return None

    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(Forgetful("forgetful", [[]]), backoff=[60])
    reports = ingestion.run_cycle("forgetful", max_bursts=1)
    assert "around() returned without calling burst(context)" in (reports[0].reason or "")


@pytest.mark.timeout(60)
def test_stale_and_duplicate_messages_are_skipped_with_a_reason(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    holder: dict[str, Any] = {}

    def during_page(page: int) -> None:
        if page == 1:  # while this burst holds the step, the same message arrives again
            holder["dup"] = ingestion.engine.run_step("p", holder["ticket"], "other/2")

    ingestion.add_provider(PagesProvider("p", numbered_pages(3, 5), on_page=during_page))
    ingestion.store.ensure_providers(["p"])
    doorbell = ingestion.store.start("p")
    holder["ticket"] = doorbell.ticket
    report = step(ingestion, doorbell)
    assert report.outcome == "done"
    assert holder["dup"].outcome == "skipped"
    assert "duplicate message" in holder["dup"].reason
    late = ingestion.engine.run_step("p", doorbell.ticket, "other/3")
    assert late.outcome == "skipped" and "stale message" in (late.reason or "")
    unknown = ingestion.engine.run_step("nobody", 1, "other/4")
    assert unknown.outcome == "skipped"
    assert len(ingestion.store.bursts("p")) == 1


@pytest.mark.timeout(60)
def test_an_operator_start_interrupts_a_running_burst_which_commits_nothing_more(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)

    def during_page(page: int) -> None:
        if page == 2:
            ingestion.store.start("p")

    ingestion.add_provider(
        PagesProvider("p", numbered_pages(5, 5), on_page=during_page), burst_length=30
    )
    ingestion.store.ensure_providers(["p"])
    doorbell = ingestion.store.start("p")
    report = step(ingestion, doorbell)
    assert report.outcome == "interrupted"
    # Page 2 is read while page 1 commits: the start races that commit, and page 2 never
    # commits. What the burst counts is what its cycle holds.
    assert report.pages in (1, 2)
    cycles = ingestion.store.cycles("p")
    assert [c["status"] for c in cycles] == [CycleStatus.RUNNING, CycleStatus.CANCELLED]
    assert cycles[1]["pages"] == report.pages


@pytest.mark.timeout(60)
def test_the_catalog_reads_in_pages_and_by_ref(
    synthetic: IncrementalIngestion, source: SyntheticSource
) -> None:
    synthetic.run_cycle("services")
    pages = list(synthetic.catalog.pages("services", page_size=128))
    assert [len(p) for p in pages] == [128, 128, 128, 128, 88]
    refs = [e.ref for page in pages for e in page]
    assert refs == sorted(refs) and len(set(refs)) == 600
    assert synthetic.catalog.get("component:default/nothing") is None
    assert synthetic.catalog.count() == 600
    assert len(list(synthetic.catalog.iter(kind="Component"))) == 600
    assert list(synthetic.catalog.iter(kind="API")) == []


@pytest.mark.timeout(60)
def test_a_new_provider_is_registered_by_the_reconciler_and_due_at_once(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(PagesProvider("fresh", numbered_pages(1, 3)))
    assert ingestion.store.provider_names() == []
    due = ingestion.reconcile()
    assert [d.provider for d in due] == ["fresh"]
    report = ingestion.engine.run_step("fresh", due[0].ticket, OWNER)
    assert report.outcome == "done" and ingestion.catalog.count("fresh") == 3


@pytest.mark.timeout(60)
def test_a_step_due_beyond_the_countdown_cap_is_left_to_the_reconciler(
    database_url: str, tmp_path: Path
) -> None:
    ingestion = make_ingestion(database_url, tmp_path, max_countdown=0.2, resend_after=0)
    ingestion.add_provider(
        PagesProvider("later", numbered_pages(2, 3)), burst_length=0.001, burst_interval=3
    )
    ingestion.store.ensure_providers(["later"])
    report = step(ingestion, ingestion.store.start("later"))
    assert report.outcome == "continued" and report.next is not None
    assert ingestion.ring(report.next) is False, "no countdown beyond the cap is sent"
    assert ingestion.reconcile() == [], "not due yet"
    due = wait_until_due(ingestion)
    assert [(d.provider, d.ticket) for d in due] == [("later", report.next.ticket)]


def wait_until_due(ingestion: IncrementalIngestion) -> list[Doorbell]:
    due: list[Doorbell] = wait_until(ingestion.reconcile, timeout=10, what="an announcement")
    return due
