"""Events with real Celery workers: while a cycle runs, while no worker runs, and through
``celery call`` (the ``ingestion.event`` task), on SQLite and Postgres over Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ingestion import CycleStatus, IncrementalIngestion
from ingestion.settings import control_queue
from ingestion.tasks import EVENT
from providers.synthetic import SourceServer, SyntheticSource, service_ref, synthetic_event
from tests.support.feed import catalog_content, replay
from tests.support.ingestions import client_ingestion
from tests.support.sources import page_held
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.workers


def spec(server: SourceServer, **options: Any) -> dict[str, Any]:
    values = {
        "burst_length": 30,
        "burst_interval": 0,
        "rest_length": 3600,
        "backoff": [0.5, 0.5, 0.5],
        **options,
    }
    return {"name": "services", "url": server.url, "per_page": 10, "options": values}


def completed(client: IncrementalIngestion, count: int, timeout: float = 60) -> None:
    wait_until(
        lambda: (
            len(
                [c for c in client.store.cycles("services") if c["status"] == CycleStatus.COMPLETED]
            )
            >= count
        ),
        timeout=timeout,
        what=f"{count} completed cycle(s)",
    )


def version_of(client: IncrementalIngestion, number: int) -> int:
    found = client.catalog.get(service_ref(number))
    assert found is not None
    return int(found.entity["spec"]["version"])


def first_cycle_done(
    make: Callable[..., Workers], database_url: str, broker_url: str, server: SourceServer
) -> tuple[Workers, IncrementalIngestion]:
    """A worker ``w1`` that has completed the provider's first cycle, and the test's client."""
    workers = make(database_url, broker_url, [spec(server)])
    workers.start("w1")
    client = client_ingestion(workers)
    completed(client, 1)
    return workers, client


@pytest.mark.timeout(120)
def test_events_during_a_workers_cycle_agree_with_its_pages_and_its_sweep(
    database_url: str,
    redis_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.count = 40  # four pages of ten
    _, client = first_cycle_done(workers_factory, database_url, redis_url, source_server)

    # Given the worker's second cycle, held while it reads page 2 (services 10-19)
    with page_held(source, 2, lambda: client.start("services")):
        # When events remove 12 (on that page) and 25 (on page 3), change 15 (on that page)
        # and add 500 (in no page); the source itself is unchanged
        for delivery, change in (
            ("e-1", {"removed": [12, 25]}),
            ("e-2", {"added": [15, 500], "version": 7}),
        ):
            client.accept_event(
                "synthetic",
                synthetic_event(source_server.url, **change),
                delivery_id=delivery,
                announce=False,
            )
        assert client.apply_events("test/1") == 2
        refs = set(client.catalog.refs("services"))
        assert service_ref(12) not in refs and service_ref(25) not in refs  # at once
    completed(client, 2)

    refs = set(client.catalog.refs("services"))
    assert service_ref(12) not in refs, "page 2 was read before the removal"
    assert version_of(client, 15) == 7, "page 2 was read before the change"
    assert service_ref(25) in refs, "page 3 was read after the removal"
    assert service_ref(500) in refs, "added during the cycle: marked in it, kept by its sweep"

    # And the next cycle brings the catalog back to the source, the feed following it
    client.start("services")
    completed(client, 3)
    assert set(client.catalog.refs("services")) == source.refs()
    assert version_of(client, 15) == 0
    assert replay(client) == catalog_content(client)


@pytest.mark.timeout(120)
def test_an_event_accepted_while_no_worker_runs_is_applied_when_one_starts(
    database_url: str,
    redis_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.count = 20
    workers, client = first_cycle_done(workers_factory, database_url, redis_url, source_server)
    workers.terminate("w1")

    # The service is down: the event is stored, and waits
    accepted = client.accept_event(
        "synthetic", synthetic_event(source_server.url, removed=[3]), delivery_id="while-down"
    )
    event = client.store.event(accepted.id)
    assert event is not None and event["status"] == "pending"
    assert service_ref(3) in set(client.catalog.refs("services"))

    workers.start("w2")
    wait_until(
        lambda: client.store.event(accepted.id)["status"] == "applied",
        timeout=60,
        what="the stored event applied",
    )
    assert service_ref(3) not in set(client.catalog.refs("services"))


@pytest.mark.timeout(120)
def test_celery_call_delivers_an_event_and_a_redelivered_message_applies_once(
    pg_url: str,
    redis_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.count = 20
    workers, client = first_cycle_done(workers_factory, pg_url, redis_url, source_server)
    before = client.store.last_change_id()

    # The same message twice (a broker redelivers it: same task id)
    for _ in range(2):
        client.celery_app.send_task(
            EVENT,
            kwargs={
                "topic": "synthetic",
                "payload": synthetic_event(source_server.url, added=[700], version=2),
            },
            task_id="delivery-700",
            queue=control_queue(client.settings),
        )
    wait_until(
        lambda: service_ref(700) in set(client.catalog.refs("services")),
        timeout=60,
        what="the event's entity in the catalog",
    )
    wait_until(
        lambda: (
            "ingestion.event[delivery-700] succeeded" in workers.logs()
            and workers.logs().count("ingestion.event[delivery-700] succeeded") == 2
        ),
        timeout=30,
        what="both messages handled",
    )
    assert [(c["kind"], c["ref"]) for c in client.store.changes(after=before)] == [
        ("added", service_ref(700))
    ]
