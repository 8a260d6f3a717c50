"""The change feed: every change to the catalog, recorded with it, in commit order.

Real SQLite and Postgres; cycles run through the real engine in this process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy.exc import IntegrityError

from ingestion import DeferredEntity, EntityIteratorResult, IncrementalIngestion, Settings
from ingestion.entities import prepare
from ingestion.preparing import prepare_page
from ingestion.store import Store, changes
from ingestion.store.changes import ChangeSource
from ingestion.store.events import Lease, ProviderDelta, StoredEvent
from ingestion.store.pages import EventMarking
from providers.synthetic import (
    SourceServer,
    SyntheticSource,
    service_entity,
    service_ref,
    synthetic_event,
)
from tests.support.brokers import purge
from tests.support.feed import catalog_content, replay
from tests.support.ingestions import FOREGROUND, services_ingestion
from tests.support.paths import REDIS_URL, unique
from tests.support.sources import component, ref

pytestmark = pytest.mark.timeout(90)

FAST = FOREGROUND


@pytest.fixture
def served() -> Iterator[tuple[SyntheticSource, SourceServer]]:
    source = SyntheticSource(count=120, per_page=25)
    with SourceServer(source) as server:
        yield source, server


def make(
    database_url: str, tmp_path: Path, url: str, options: dict[str, Any] | None = None, **kw: Any
) -> IncrementalIngestion:
    return services_ingestion(database_url, tmp_path, url, per_page=25, options=options, **kw)


def cycle(ingestion: IncrementalIngestion) -> None:
    reports = ingestion.run_cycle("services")
    assert reports[-1].outcome == "done", reports[-1].reason


def test_replaying_the_feed_from_the_start_rebuilds_the_catalog(
    database_url: str, tmp_path: Path, served: tuple[SyntheticSource, SourceServer]
) -> None:
    source, server = served
    # The sweep guard holds back a large removal until an operator approves it
    options = {**FAST, "reject_removals_above_percentage": 20}
    ingestion = make(database_url, tmp_path, server.url, options)
    cycle(ingestion)
    assert replay(ingestion) == catalog_content(ingestion)

    # Changes, additions and removals between cycles
    source.version = 1
    source.drop(0.1)
    source.grow(0.1)
    cycle(ingestion)
    # Events: an addition the next cycle sweeps, a change, a removal the next cycle restores
    ingestion.accept_event(
        "synthetic", synthetic_event(server.url, added=[900, 3], version=5), announce=False
    )
    ingestion.accept_event("synthetic", synthetic_event(server.url, removed=[4]), announce=False)
    assert ingestion.apply_events("test/1") == 2
    assert replay(ingestion) == catalog_content(ingestion)
    cycle(ingestion)
    # A removal above the guard: held, then approved by an operator
    source.drop(0.5, salt=1)
    cycle(ingestion)
    assert ingestion.store.status("services").blocked_sweep is not None
    assert ingestion.store.approve_held_removals("services") > 0
    cycle(ingestion)

    assert set(ingestion.catalog.refs("services")) == source.refs()
    assert replay(ingestion) == catalog_content(ingestion)
    sources = {c["source"] for c in ingestion.store.changes(limit=10_000)}
    assert sources == {"page", "event", "sweep", "operator"}
    ingestion.close()


def test_a_page_that_does_not_commit_leaves_nothing_in_the_feed(
    database_url: str, tmp_path: Path, served: tuple[SyntheticSource, SourceServer]
) -> None:
    ingestion = make(database_url, tmp_path, served[1].url)
    store = ingestion.store
    registered = ingestion.registered("services")
    doorbell = store.start("services")
    lease = timedelta(seconds=30)
    claim = store.claim("services", doorbell.ticket, "test/1", lease, registered.options)

    def page(*numbers: int) -> Any:
        result = EntityIteratorResult(
            done=False,
            entities=[DeferredEntity(service_entity(n)) for n in numbers],
            cursor={"page": 2},
        )
        return prepare_page("services", result, 1)

    assert not isinstance(claim, str) and hasattr(claim, "cycle_id")
    store.commit_page(claim, page(1, 2), 1, lease)  # type: ignore[arg-type]
    # The same page committed twice (a duplicate message): the database refuses the second
    # commit, and the new entity it carried is neither in the catalog nor in the feed
    with pytest.raises(IntegrityError):
        store.commit_page(claim, page(1, 3), 1, lease)  # type: ignore[arg-type]
    assert set(ingestion.catalog.refs()) == {service_ref(1), service_ref(2)}
    assert [(c["kind"], c["ref"]) for c in store.changes()] == [
        ("added", service_ref(1)),
        ("added", service_ref(2)),
    ]
    ingestion.close()


def test_a_consumer_following_the_feed_misses_nothing_while_writers_race(
    pg_url: str, tmp_path: Path, served: tuple[SyntheticSource, SourceServer]
) -> None:
    # Given four writers committing changes at once, and a reader that follows the feed by
    # id all along, as a consumer does
    ingestion = make(pg_url, tmp_path, served[1].url)
    store = ingestion.store
    names = [f"writer-{i}" for i in range(4)]
    store.ensure_providers(names)
    lease = Lease("race", "writers", timedelta(seconds=60))
    assert store.take_lock(lease.name, lease.owner, lease.ttl)
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        after = 0
        while True:
            done = stop.is_set()
            rows = store.changes(after=after, limit=1000)
            seen.extend(r["id"] for r in rows)
            if rows:
                after = rows[-1]["id"]
            elif done:
                return

    def write(name: str) -> None:
        for round_ in range(25):
            numbers = range(round_ * 20, round_ * 20 + 20)
            result = EntityIteratorResult(
                done=False,
                entities=[
                    DeferredEntity({**service_entity(n), "metadata": {"name": f"{name}-{n}"}})
                    for n in numbers
                ],
            )
            delta = ProviderDelta(prepare_page(name, result, 0))
            delivery = f"{name}-{round_}"
            accepted = store.accept_event(
                topic="race", payload={}, headers={}, delivery_id=delivery
            )
            event = StoredEvent(accepted.id, "race", delivery, {}, {})
            assert store.apply_event(event, {name: delta}, {}, lease) is not None

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in names]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    stop.set()
    reader.join(timeout=30)

    # Then the reader saw every change, each once, in id order
    everything = [c["id"] for c in store.changes(limit=100_000)]
    assert len(everything) == 4 * 25 * 20
    assert seen == everything
    ingestion.close()


def test_changes_and_applied_events_past_their_retention_are_pruned(
    database_url: str,
    tmp_path: Path,
    served: tuple[SyntheticSource, SourceServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingestion = make(database_url, tmp_path, served[1].url)
    cycle(ingestion)
    applied = ingestion.accept_event(
        "synthetic", synthetic_event(served[1].url, added=[900]), announce=False
    )
    ingestion.apply_events("test/1")
    waiting = ingestion.accept_event(
        "synthetic", synthetic_event(served[1].url, added=[901]), announce=False
    )
    count = len(ingestion.store.changes(limit=10_000))
    assert count == 121

    # Nothing is older than a week: a reconciler tick prunes nothing
    ingestion.reconcile()
    assert len(ingestion.store.changes(limit=10_000)) == count
    # With a retention of a millisecond, the first tick of a process prunes all changes and
    # the applied event (in batches of 50 here, one after the other), but never an event
    # still waiting to be applied
    monkeypatch.setattr("ingestion.app.PRUNE_BATCH", 50)
    hasty = make(
        database_url, tmp_path, served[1].url, changes_retention="1ms", events_retention="1ms"
    )
    hasty.reconcile()
    assert hasty.store.changes() == []
    assert hasty.store.event(applied.id) is None
    assert hasty.store.event(waiting.id)["status"] == "pending"
    # A batch at a time
    served[0].version = 1
    cycle(ingestion)  # 120 changed, and 900 swept
    assert ingestion.store.prune_history(
        changes_older_than=timedelta(0), events_older_than=timedelta(0), limit=100
    ) == (
        100,
        0,
    )
    assert ingestion.store.prune_history(
        changes_older_than=timedelta(0), events_older_than=timedelta(0), limit=100
    ) == (
        21,
        0,
    )
    hasty.close()
    ingestion.close()


def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite://", changes_retention="0", events_retention=0)
    assert settings.changes_retention is None and settings.events_retention is None
    assert Settings(database_url="sqlite://").changes_retention == timedelta(days=7)


def test_each_committed_batch_sends_the_push_task_with_its_ids(
    pg_url: str, tmp_path: Path, served: tuple[SyntheticSource, SourceServer]
) -> None:
    queue = unique("changes")
    redis_url = f"{REDIS_URL}/13"
    ingestion = make(
        pg_url,
        tmp_path,
        served[1].url,
        broker_url=redis_url,
        changes_task="consumer.catalog_changed",
        changes_task_queue=queue,
    )
    try:
        cycle(ingestion)  # 120 entities in pages of 25: five batches
        batches = []
        with Connection(redis_url) as conn:
            simple = conn.SimpleQueue(queue)
            for _ in range(5):
                message = simple.get(timeout=10)
                assert message.headers["task"] == "consumer.catalog_changed"
                _, kwargs, _ = message.decode()
                batches.append(kwargs)
                message.ack()
            simple.close()
        ids = [c["id"] for c in ingestion.store.changes(limit=1000)]
        assert [(b["first"], b["last"], b["count"]) for b in batches] == [
            (ids[i], ids[min(i + 24, len(ids) - 1)], min(25, len(ids) - i))
            for i in range(0, len(ids), 25)
        ]
        assert all(b["providers"] == ["services"] for b in batches)
    finally:
        purge(redis_url, queue)
        ingestion.close()


def test_a_store_without_changes_writes_no_feed_row(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.ensure_providers(["a"])
    assert store.changes() == [] and store.last_change_id() == 0
    store.dispose()


def test_ids_are_never_handed_out_again_after_the_feed_was_pruned_empty(
    database_url: str, tmp_path: Path, served: tuple[SyntheticSource, SourceServer]
) -> None:
    ingestion = make(database_url, tmp_path, served[1].url)
    cycle(ingestion)
    last = ingestion.store.last_change_id()
    while any(
        ingestion.store.prune_history(
            changes_older_than=timedelta(0), events_older_than=timedelta(0), limit=500
        )
    ):
        pass
    assert ingestion.store.changes() == []
    # A follower that stopped at ``last`` must see the next change
    served[0].version = 1
    cycle(ingestion)
    assert ingestion.store.changes(limit=1)[0]["id"] > last
    ingestion.close()


def test_a_ref_written_twice_or_removed_in_one_transaction_keeps_each_body_in_the_feed(
    database_url: str,
) -> None:
    # On Postgres a change takes the body its transaction left in the catalog, unless its ref
    # is written again or removed later in the same transaction: then it carries its own.
    store = Store(database_url)
    store.ensure_providers(["p"])
    a0, b0, a1 = (
        prepare(component(name, version), "p", None)
        for name, version in (("a", 0), ("b", 0), ("a", 1))
    )
    # One event adds b and removes it again: b's body is gone by the time the feed is written
    lease = Lease("applier", "test", timedelta(seconds=60))
    assert store.take_lock(lease.name, lease.owner, lease.ttl)
    accepted = store.accept_event(topic="t", payload={}, headers={}, delivery_id="b-and-back")
    event = StoredEvent(accepted.id, "t", "b-and-back", {}, {})
    page = prepare_page(
        "p", EntityIteratorResult(done=True, entities=[DeferredEntity(component("b"))]), 0
    )
    assert store.apply_event(event, {"p": ProviderDelta(page, [ref("b")])}, {}, lease)
    # One transaction writes a, then writes it again
    with store.db.write() as tx:
        for item in (a0, a1):
            writes = store.entity_writer.write(
                tx, EventMarking("p", 1), [item], expect_unchanged=False
            )
            changes.written(tx, "p", ChangeSource.EVENT, added=writes.added, changed=writes.changed)
    feed = [(c["kind"], c["ref"], c["entity"]) for c in store.changes()]
    assert feed == [
        ("added", ref("b"), json.loads(b0.canonical)),
        ("removed", ref("b"), None),
        ("added", ref("a"), json.loads(a0.canonical)),
        ("changed", ref("a"), json.loads(a1.canonical)),
    ]
    assert [(r["ref"], r["entity"]) for r in store.entities_page(after=None, limit=10)] == [
        (ref("a"), json.loads(a1.canonical))
    ]
    store.dispose()
