"""Events between cycles, applied in this process to real SQLite and Postgres.

The hook is the synthetic provider's (``SyntheticProvider.on_event``); the source is a real
HTTP server. Cycles run through the real engine here (``run_cycle``); how events and cycles
agree with a real worker reading the source is in ``test_events_workers.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestion import (
    DeferredEntity,
    Event,
    EventDelta,
    EventRejected,
    IncrementalEntityProvider,
    IncrementalIngestion,
    RemovalCheck,
    Settings,
)
from ingestion.errors import ConfigurationError, LeaseLost
from ingestion.events import APPLIER_LOCK, check_topic, clean_headers
from ingestion.settings import EMBEDDED_BROKER
from providers.synthetic import (
    SourceServer,
    SyntheticProvider,
    SyntheticSource,
    service_ref,
    synthetic_event,
)
from tests.support.feed import catalog_content, replay
from tests.support.ingestions import FOREGROUND, body_refs, services_ingestion
from tests.support.sources import page_held

pytestmark = pytest.mark.timeout(60)

FAST = FOREGROUND


@pytest.fixture
def small_source() -> Iterator[tuple[SyntheticSource, SourceServer]]:
    source = SyntheticSource(count=30, per_page=10)
    with SourceServer(source) as server:
        yield source, server


def make(database_url: str, tmp_path: Path, url: str, **settings: Any) -> IncrementalIngestion:
    return services_ingestion(database_url, tmp_path, url, **settings)


@pytest.fixture
def ingestion(
    database_url: str, tmp_path: Path, small_source: tuple[SyntheticSource, SourceServer]
) -> Iterator[IncrementalIngestion]:
    made = make(database_url, tmp_path, small_source[1].url)
    yield made
    made.close()


def cycle(ingestion: IncrementalIngestion) -> None:
    reports = ingestion.run_cycle("services")
    assert reports[-1].outcome == "done", reports[-1].reason


def deliver(ingestion: IncrementalIngestion, url: str, delivery: str, **change: Any) -> int:
    accepted = ingestion.accept_event(
        "synthetic", synthetic_event(url, **change), delivery_id=delivery, announce=False
    )
    return accepted.id


def version_of(ingestion: IncrementalIngestion, number: int) -> int:
    found = ingestion.catalog.get(service_ref(number))
    assert found is not None, service_ref(number)
    return int(found.entity["spec"]["version"])


def test_an_event_adds_changes_and_removes_at_once_and_the_feed_records_each(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    _, server = small_source
    cycle(ingestion)
    before = ingestion.store.last_change_id()
    event_id = deliver(ingestion, server.url, "d-1", added=[100, 1], removed=[2], version=4)

    # Stored, not applied yet: the catalog has not moved
    assert ingestion.store.event(event_id)["status"] == "pending"
    assert ingestion.catalog.get(service_ref(100)) is None

    assert ingestion.apply_events("test/1") == 1
    refs = set(ingestion.catalog.refs("services"))
    assert service_ref(100) in refs and service_ref(2) not in refs
    assert body_refs(ingestion) == refs
    assert version_of(ingestion, 1) == 4
    stored = ingestion.store.event(event_id)
    assert stored["status"] == "applied"
    assert stored["result"] == {"services": "added 1, changed 1, unchanged 0, removed 1"}
    feed = [
        (c["kind"], c["ref"], c["source"], c["event_id"])
        for c in ingestion.store.changes(after=before)
    ]
    assert feed == [
        ("added", service_ref(100), "event", event_id),
        ("changed", service_ref(1), "event", event_id),
        ("removed", service_ref(2), "event", event_id),
    ]


def test_a_redelivered_event_is_stored_and_applied_once(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    _, server = small_source
    first = ingestion.accept_event(
        "synthetic", synthetic_event(server.url, added=[7]), delivery_id="same", announce=False
    )
    again = ingestion.accept_event(
        "synthetic", synthetic_event(server.url, added=[8]), delivery_id="same", announce=False
    )
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert ingestion.apply_events("test/1") == 1
    assert ingestion.apply_events("test/1") == 0
    assert set(ingestion.catalog.refs("services")) == {service_ref(7)}
    assert [c["kind"] for c in ingestion.store.changes()] == ["added"]


def test_events_apply_in_the_order_they_were_accepted(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    _, server = small_source
    deliver(ingestion, server.url, "1", added=[5], version=1)
    deliver(ingestion, server.url, "2", removed=[5])
    deliver(ingestion, server.url, "3", added=[5], version=3)
    deliver(ingestion, server.url, "4", added=[6], version=1)
    deliver(ingestion, server.url, "5", added=[6], version=2)

    assert ingestion.apply_events("test/1") == 5
    assert version_of(ingestion, 5) == 3 and version_of(ingestion, 6) == 2
    kinds = [(c["kind"], c["ref"]) for c in ingestion.store.changes()]
    assert kinds == [
        ("added", service_ref(5)),
        ("removed", service_ref(5)),
        ("added", service_ref(5)),
        ("added", service_ref(6)),
        ("changed", service_ref(6)),
    ]


def test_one_applier_at_a_time_and_a_lease_that_expires_is_taken_over(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    _, server = small_source
    deliver(ingestion, server.url, "1", added=[5])
    from datetime import timedelta

    # Another worker holds the applier's lease: this one leaves the events to it
    assert ingestion.store.take_lock(APPLIER_LOCK, "other/1", timedelta(seconds=60))
    assert ingestion.apply_events("test/1") == 0
    assert ingestion.store.event(1)["status"] == "pending"
    # Its lease lapses (a worker that died): the next applier takes over
    assert ingestion.store.take_lock(APPLIER_LOCK, "other/1", timedelta(seconds=-1))
    assert ingestion.apply_events("test/1") == 1


def test_an_event_added_during_a_cycle_is_marked_in_it_and_the_sweep_keeps_it(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    # Given a cycle reading page 2 of 3, held while an event adds a service the source's
    # pages already read will not show
    source, server = small_source
    cycle(ingestion)
    runner = threading.Thread(target=cycle, args=(ingestion,))
    with page_held(source, 2, runner.start):
        deliver(ingestion, server.url, "new", added=[500])
        assert ingestion.apply_events("test/1") == 1
    runner.join(timeout=30)
    # Then the completed cycle's sweep kept it: marked in that cycle
    assert service_ref(500) in set(ingestion.catalog.refs("services"))
    # And the next cycle, reading a source without it, removes it: the source is the truth
    cycle(ingestion)
    assert set(ingestion.catalog.refs("services")) == source.refs()


def test_a_page_read_before_an_event_does_not_undo_it_and_one_read_after_does(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    # Given the second cycle held while it reads page 2 (services 10-19)
    source, server = small_source
    cycle(ingestion)
    runner = threading.Thread(target=cycle, args=(ingestion,))
    with page_held(source, 2, runner.start):
        # When events remove 12 (on the page being read) and 25 (on page 3, not read yet) and
        # change 15 (on the page being read); the source itself still has them all, unchanged
        deliver(ingestion, server.url, "rm", removed=[12, 25])
        deliver(ingestion, server.url, "ch", added=[15], version=9)
        assert ingestion.apply_events("test/1") == 2
        refs = set(ingestion.catalog.refs("services"))
        assert service_ref(12) not in refs and service_ref(25) not in refs  # removed at once
    runner.join(timeout=30)
    refs = set(ingestion.catalog.refs("services"))
    # Then page 2, read before the events, neither brought 12 back nor undid the change
    assert service_ref(12) not in refs
    assert version_of(ingestion, 15) == 9
    # And page 3, read after them, did bring 25 back
    assert service_ref(25) in refs
    # And the next cycle reads everything after the events: the source is the truth
    cycle(ingestion)
    assert set(ingestion.catalog.refs("services")) == source.refs()
    assert version_of(ingestion, 15) == 0
    assert replay(ingestion) == catalog_content(ingestion)


class Picky(IncrementalEntityProvider[None, None]):
    """Takes events of topic ``picky``: rejects those without ``name``, fails on ``boom``."""

    def get_provider_name(self) -> str:
        return "picky"

    def around(self, burst: Any) -> None:
        burst(None)

    def next(self, context: None, cursor: None = None) -> Any:
        raise NotImplementedError

    def on_event(self, event: Event) -> EventDelta | None:
        if event.topic != "picky":
            return None
        if event.payload.get("boom"):
            raise RuntimeError("the hook broke")
        if "name" not in event.payload:
            raise EventRejected("a picky event needs 'name'")
        return EventDelta(
            added=[
                # one valid entity and one that breaks the envelope
                _deferred(event.payload["name"]),
                _deferred("not a valid name!"),
            ]
        )


def _deferred(name: str) -> Any:
    from ingestion import DeferredEntity

    return DeferredEntity(
        {
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {"type": "service", "owner": "me"},
        }
    )


def test_a_rejected_or_failing_event_is_recorded_and_does_not_stop_the_next(
    database_url: str, tmp_path: Path, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    ingestion = make(database_url, tmp_path, small_source[1].url)
    ingestion.add_provider(Picky(), **FAST)
    ingestion.register_providers()
    rejected = ingestion.accept_event("picky", {}, announce=False)
    failed = ingestion.accept_event("picky", {"boom": True}, announce=False)
    fine = ingestion.accept_event("picky", {"name": "fine"}, announce=False)

    assert ingestion.apply_events("test/1") == 3
    assert ingestion.store.event(rejected.id)["result"] == {
        "picky": "rejected: a picky event needs 'name'"
    }
    assert ingestion.store.event(failed.id)["result"] == {
        "picky": "failed: RuntimeError: the hook broke"
    }
    assert ingestion.store.event(fine.id)["result"] == {
        "picky": "added 1, changed 0, unchanged 0, removed 0, rejected 1"
    }
    assert list(ingestion.catalog.refs("picky")) == ["component:default/fine"]
    [error] = ingestion.errors("picky")
    assert error["kind"] == "entity" and "not a valid name!" in error["message"]
    ingestion.close()


def test_headers_keep_no_credentials_and_a_topic_is_checked() -> None:
    kept = clean_headers(
        {
            "Authorization": "Bearer s3cret",
            "X-Hub-Signature-256": "sha256=abc",
            "X-GitHub-Event": "repository",
            "Cookie": "session=1",
            "X-Api-Key": "k",
            "Content-Type": "application/json",
        }
    )
    assert kept == {"x-github-event": "repository", "content-type": "application/json"}
    assert check_topic("github") == "github"
    for bad in ("", "has space", "../etc", "x" * 200):
        with pytest.raises(ConfigurationError, match="event topic"):
            check_topic(bad)


def test_metrics_show_events_waiting_and_the_feeds_last_id(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    from ingestion.metrics import registry_for, render

    _, server = small_source
    cycle(ingestion)
    deliver(ingestion, server.url, "w-1", added=[100])
    deliver(ingestion, server.url, "w-2", added=[101])
    text = render(registry_for(ingestion.store.db)).decode()
    assert "ingestion_events_waiting 2.0" in text
    assert "ingestion_changes_last_id 30.0" in text
    ingestion.apply_events("test/1")
    text = render(registry_for(ingestion.store.db)).decode()
    assert "ingestion_events_waiting 0.0" in text
    assert "ingestion_events_oldest_waiting_seconds 0.0" in text
    assert "ingestion_changes_last_id 32.0" in text


class Checking(SyntheticProvider):
    """Checks removal candidates; an event arrives while it asks the source about them."""

    def __init__(self, url: str, during_check: Any) -> None:
        super().__init__("services", url, 10)
        self.during_check = during_check

    def check_removals(self, context: Any, candidates: Any) -> RemovalCheck:
        self.during_check()
        # The source (its paging skipped them) still has every candidate
        return RemovalCheck(present=[DeferredEntity(c.entity) for c in candidates])


def test_a_removal_check_read_before_an_event_does_not_undo_it(
    database_url: str, tmp_path: Path, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    source, server = small_source
    settings = Settings(
        database_url=database_url, broker_url=EMBEDDED_BROKER, broker_dir=tmp_path / "b"
    )
    ingestion = IncrementalIngestion(settings=settings)

    def event_removes_5() -> None:
        deliver(ingestion, server.url, "rm-5", removed=[5])
        assert ingestion.apply_events("test/1") == 1

    ingestion.add_provider(Checking(server.url, event_removes_5), **FAST)
    ingestion.register_providers()
    cycle(ingestion)
    source.removed.add(5)  # the next cycle's pages miss 5: a removal candidate
    cycle(ingestion)
    assert service_ref(5) not in set(ingestion.catalog.refs("services"))
    ingestion.close()


def test_the_push_task_has_a_queue_of_its_own_by_default() -> None:
    from ingestion.settings import changes_queue

    assert changes_queue(Settings(queue="ingest")) == "ingest.changes"
    assert changes_queue(Settings(queue="ingest", changes_task_queue="feed")) == "feed"


def test_a_demo_providers_event_writes_what_its_cycle_reads(
    database_url: str, tmp_path: Path, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    from providers.demo.app import DemoProvider, demo_ref

    _, server = small_source
    settings = Settings(
        database_url=database_url, broker_url=EMBEDDED_BROKER, broker_dir=tmp_path / "b"
    )
    demo = IncrementalIngestion(settings=settings)
    demo.add_provider(DemoProvider("libraries", server.url, 10), **FAST)
    demo.register_providers()
    assert demo.run_cycle("libraries")[-1].outcome == "done"
    demo.accept_event(
        "synthetic", synthetic_event(server.url, added=[3], removed=[4]), announce=False
    )
    before = demo.store.last_change_id()
    assert demo.apply_events("test/1") == 1
    # The event's entity is the cycle's (unchanged), and the removal names the cycle's ref
    assert [(c["kind"], c["ref"]) for c in demo.store.changes(after=before)] == [
        ("removed", demo_ref("libraries", 4))
    ]
    demo.close()


def test_a_payload_that_is_a_json_string_is_stored_as_one(
    ingestion: IncrementalIngestion,
) -> None:
    accepted = ingestion.accept_event("synthetic", "hello", announce=False)
    assert ingestion.apply_events("test/1") == 1
    stored = ingestion.store.event(accepted.id)
    assert stored is not None
    assert stored["payload"] == "hello" and stored["status"] == "applied"


class Sloppy(Picky):
    """Returns deltas that break the contract in the ways the payload asks for."""

    def get_provider_name(self) -> str:
        return "sloppy"

    def on_event(self, event: Event) -> EventDelta | None:
        if event.topic != "sloppy":
            return None
        how = event.payload["how"]
        if how == "string":
            return EventDelta(removed="component:default/x")  # type: ignore[arg-type]
        if how == "long":
            return EventDelta(removed=["component:default/" + "x" * 600])
        if how == "nul":
            entity = _deferred("nul").entity
            return EventDelta(added=[_deferred_of({**entity, "spec": {"note": "a\x00b"}})])
        return EventDelta(added=[_deferred(how)])


def _deferred_of(entity: dict[str, Any]) -> Any:
    from ingestion import DeferredEntity

    return DeferredEntity(entity)


def test_an_event_a_provider_or_the_database_cannot_take_does_not_hold_up_the_next(
    database_url: str, tmp_path: Path, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    ingestion = make(database_url, tmp_path, small_source[1].url)
    ingestion.add_provider(Sloppy(), **FAST)
    ingestion.register_providers()
    string = ingestion.accept_event("sloppy", {"how": "string"}, announce=False)
    long = ingestion.accept_event("sloppy", {"how": "long"}, announce=False)
    nul = ingestion.accept_event("sloppy", {"how": "nul"}, announce=False)
    fine = ingestion.accept_event("sloppy", {"how": "fine"}, announce=False)

    ingestion.apply_events("test/1")
    assert (
        "EventDelta.removed must be a list" in ingestion.store.event(string.id)["result"]["sloppy"]
    )
    assert "ref of 1-512 characters" in ingestion.store.event(long.id)["result"]["sloppy"]
    after_nul = ingestion.store.event(nul.id)
    if ingestion.store.dialect == "postgresql":
        # Postgres refuses a NUL in text: the event failed, with the database's reason
        assert after_nul["status"] == "failed"
        assert after_nul["result"]["*"].startswith("failed: ")
    else:
        assert after_nul["status"] == "applied"
    assert ingestion.store.event(fine.id)["status"] == "applied"
    assert "component:default/fine" in set(ingestion.catalog.refs("sloppy"))
    assert ingestion.store.pending_events() == []
    ingestion.close()


def test_an_applier_whose_lease_expired_applies_nothing_and_an_event_applies_once(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    from datetime import timedelta

    from ingestion.store.events import Lease, ProviderDelta

    _, server = small_source
    event_id = deliver(ingestion, server.url, "once", added=[5])
    [stored] = ingestion.store.pending_events()
    deltas, results = ingestion.events.offer(stored)
    assert set(deltas) == {"services"} and isinstance(deltas["services"], ProviderDelta)
    # A lease this applier does not hold (it expired and someone took it): nothing applies
    stale = Lease(APPLIER_LOCK, "stale/1", timedelta(seconds=60))
    with pytest.raises(LeaseLost):
        ingestion.store.apply_event(stored, deltas, results, stale)
    assert ingestion.catalog.get(service_ref(5)) is None
    # The holder applies it once; a second try (a stale batch) finds it applied
    held = Lease(APPLIER_LOCK, "holder/1", timedelta(seconds=60))
    assert ingestion.store.take_lock(held.name, held.owner, held.ttl)
    assert ingestion.store.apply_event(stored, deltas, results, held) is not None
    assert ingestion.store.apply_event(stored, deltas, results, held) is None
    assert [c["event_id"] for c in ingestion.store.changes()] == [event_id]


def test_a_delivery_id_is_unique_per_topic(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    first = ingestion.accept_event("synthetic", {}, delivery_id="1", announce=False)
    other = ingestion.accept_event("inventory", {}, delivery_id="1", announce=False)
    again = ingestion.accept_event("synthetic", {}, delivery_id="1", announce=False)
    assert not other.duplicate and other.id != first.id
    assert again.duplicate and again.id == first.id


def test_the_event_task_takes_the_delivery_id_from_the_headers_before_its_own_id(
    ingestion: IncrementalIngestion, small_source: tuple[SyntheticSource, SourceServer]
) -> None:
    from ingestion.tasks import EVENT

    payload = synthetic_event(small_source[1].url, added=[9])
    headers = {"X-GitHub-Delivery": "relayed-1", "Authorization": "Bearer not-kept"}
    results = [
        ingestion.tasks[EVENT]
        .apply(kwargs={"topic": "synthetic", "payload": payload, "headers": headers})
        .get(timeout=30)
        for _ in range(2)
    ]
    assert [r["duplicate"] for r in results] == [False, True]
    stored = ingestion.store.event(results[0]["id"])
    assert stored is not None and stored["delivery_id"] == "relayed-1"
    assert "authorization" not in stored["headers"]
    assert list(ingestion.catalog.refs("services")) == [service_ref(9)]
