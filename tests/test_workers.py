"""Real Celery worker processes over Redis and RabbitMQ: distribution, crashes, duplicates, lost
messages, and countdowns that must stay under the broker's limits."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingestion import Action, IncrementalIngestion
from ingestion.app import POOL_SWITCH_INTERVAL
from ingestion.tasks import BURST
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.brokers import purge, queue_length
from tests.support.ingestions import client_ingestion, completed_cycles, wait_for_completed
from tests.support.synthetic_app import POOL_PROCESS
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.workers


def provider_spec(server: SourceServer, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "burst_length": 0.4,
        "burst_interval": 0.05,
        "rest_length": 3600,
        "backoff": [0.5, 0.5, 0.5],
    }
    defaults.update(options)
    return {"name": "services", "url": server.url, "per_page": 25, "options": defaults}


def wait_for_running_burst(client: IncrementalIngestion, pages: int) -> dict[str, Any]:
    """A burst running now that has committed ``pages`` pages already."""

    def running() -> dict[str, Any] | None:
        for burst in client.store.bursts("services"):
            if burst["outcome"] == "running" and burst["pages"] >= pages:
                return burst
        return None

    found: dict[str, Any] = wait_until(running, timeout=60, what="a burst in progress")
    return found


@pytest.mark.timeout(120)
def test_workers_run_cycles_by_themselves_and_the_catalog_follows_the_source(
    database_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.delay = 0.02
    workers = workers_factory(database_url, broker_url, [provider_spec(source_server)])
    workers.start("w1")
    workers.start("w2")
    client = client_ingestion(workers)
    # No trigger: a newly registered provider begins its first cycle on its own.
    wait_for_completed(client, 1)
    assert set(client.catalog.refs("services")) == source.refs()
    first = completed_cycles(client)[0]
    assert first["bursts"] >= 2 and first["pages"] == 24

    source.drop(0.10)
    source.grow(0.05)
    client.start("services")
    wait_for_completed(client, 2)
    assert set(client.catalog.refs("services")) == source.refs()
    assert completed_cycles(client)[0]["removed"] == 60
    assert "burst provider=services" in workers.logs()


@pytest.mark.timeout(60)
def test_a_pool_process_hands_the_gil_over_sooner_and_keeps_what_it_inherited_out_of_the_gc(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    workers_factory: Callable[..., Workers],
) -> None:
    workers = workers_factory(pg_url, redis_url, [])
    workers.start("w1")
    report = tmp_path / "pool-process.json"
    client = client_ingestion(workers)
    client.celery_app.send_task(POOL_PROCESS, args=[str(report)], queue=workers.queue)
    wait_until(report.exists, timeout=30, what="the pool process's report")
    tuned = json.loads(report.read_text(encoding="utf-8"))
    assert tuned == {"switch_interval": pytest.approx(POOL_SWITCH_INTERVAL), "frozen": True}
    assert POOL_SWITCH_INTERVAL < 0.005  # shorter than Python's default


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_burst_costs_at_most_the_page_in_flight(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    # 80 pages of 0.1 s, bursts of about 1.5 s: the cycle is still running when every
    # process has started, even on a busy machine
    source.count, source.delay = 2000, 0.1
    spec = provider_spec(source_server, burst_length=1.5)
    # The default lease, reconciler period and resend delay: recovery as deployed
    workers = workers_factory(
        pg_url, broker_url, [spec], reconcile_interval=5, resend_after=5, lease_seconds=10
    )
    workers.start("w1")
    workers.start("w2")
    workers.start_beat()
    client = client_ingestion(workers)

    victim_burst = wait_for_running_burst(client, pages=2)
    victim = str(victim_burst["worker"]).split("@", 1)[0]
    survivor = "w2" if victim == "w1" else "w1"
    killed_at = datetime.now(UTC)
    workers.kill(victim)

    wait_for_completed(client, 1, timeout=90)
    assert set(client.catalog.refs("services")) == source.refs()
    cycle = completed_cycles(client)[0]
    marks = client.store.checkpoints("services", limit=1000)
    assert sorted(m["sequence"] for m in marks) == list(range(1, 81)), "each page exactly once"
    assert cycle["pages"] == 80 and cycle["entities"] == 2000
    bursts = client.store.bursts("services", limit=1000)
    lost = [b for b in bursts if b["outcome"] == "lost"]
    assert [b["id"] for b in lost] == [victim_burst["id"]]
    assert "never finished" in (lost[0]["error"] or "")
    after = [b for b in bursts if b["id"] > victim_burst["id"] and b["outcome"] != "lost"]
    assert after and all(b["worker"].startswith(f"{survivor}@") for b in after)
    assert sum(b["pages"] for b in bursts) == 80, "no page committed twice"
    # Replaced within the lease (10 s) plus a reconciler period (5 s), the lost burst, which had
    # made progress, retried at once; 10 s more for the claim and a busy machine
    replaced = min(b["started_at"] for b in after)
    assert (replaced - killed_at).total_seconds() < 25


@pytest.mark.timeout(120)
def test_a_worker_stopped_warm_mid_burst_hands_over_at_once(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.count, source.delay = 2000, 0.1
    spec = provider_spec(source_server, burst_length=1.5)
    workers = workers_factory(
        pg_url, broker_url, [spec], reconcile_interval=5, resend_after=5, lease_seconds=10
    )
    workers.start("w1")
    workers.start("w2")
    client = client_ingestion(workers)

    burst = wait_for_running_burst(client, pages=1)
    victim = str(burst["worker"]).split("@", 1)[0]
    workers.terminate(victim)  # SIGTERM: a warm shutdown lets the burst end as usual
    wait_for_completed(client, 1, timeout=90)
    bursts = {b["id"]: b for b in client.store.bursts("services", limit=1000)}
    assert bursts[burst["id"]]["outcome"] == "continued"
    following = bursts[min(i for i in bursts if i > burst["id"])]
    handed_over = (following["started_at"] - bursts[burst["id"]]["ended_at"]).total_seconds()
    assert handed_over < 3, "the next burst starts at once on the other worker, no lease to wait"
    assert not [b for b in bursts.values() if b["outcome"] == "lost"]
    assert set(client.catalog.refs("services")) == source.refs()


@pytest.mark.timeout(120)
def test_one_burst_message_delivered_five_times_to_two_workers_runs_once(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.delay = 0.05
    workers = workers_factory(pg_url, broker_url, [provider_spec(source_server, burst_length=1)])
    workers.start("w1")
    workers.start("w2")
    client = client_ingestion(workers)
    wait_for_completed(client, 1)  # the first cycle, begun by the workers themselves
    bursts_before = len(client.store.bursts("services"))

    doorbell = client.store.trigger("services")  # the step is recorded, no message sent
    kwargs = {"provider": "services", "ticket": doorbell.ticket, "cycle": None, "burst": 1}
    for _ in range(5):
        client.tasks[BURST].apply_async(kwargs=kwargs, queue=workers.queue)

    def skipped() -> int:
        pattern = rf"skipped services ticket {doorbell.ticket}: (duplicate|stale) message"
        return len(re.findall(pattern, workers.logs()))

    wait_until(lambda: skipped() >= 4, timeout=60, what="four skipped duplicates")
    wait_for_completed(client, 2)
    ran = [b for b in client.store.bursts("services") if b["ticket"] == doorbell.ticket]
    assert len(ran) == 1
    assert skipped() == 4
    new_bursts = len(client.store.bursts("services")) - bursts_before
    assert new_bursts == completed_cycles(client)[0]["bursts"]


@pytest.mark.timeout(120)
def test_a_purged_queue_is_recovered_by_the_reconciler(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    workers = workers_factory(pg_url, broker_url, [provider_spec(source_server)])
    client = client_ingestion(workers)
    client.start("services")  # recorded, and its message sent to the queue ...
    assert queue_length(broker_url, workers.queue) == 1
    purge(broker_url, workers.queue)  # ... and lost
    assert client.store.status("services").action is Action.INGEST
    workers.start("w1")
    workers.start_beat()
    wait_for_completed(client, 1)
    assert set(client.catalog.refs("services")) == source.refs()
    assert "reconciler: announcing services" in workers.logs()


@pytest.mark.timeout(120)
def test_a_next_that_never_returns_is_stopped_by_the_time_limit_and_backs_off(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    source.delay = 30  # far beyond page_timeout (3 s): the soft time limit fires
    spec = provider_spec(source_server, burst_length=0.5, backoff=[600])
    workers = workers_factory(pg_url, broker_url, [spec])
    workers.start("w1")
    client = client_ingestion(workers)

    def backing_off() -> bool:
        if "services" not in client.store.provider_names():
            return False  # the worker has not registered it yet
        return client.store.status("services").action is Action.BACKOFF

    wait_until(backing_off, timeout=60, what="the provider backing off")
    status = client.store.status("services")
    assert status.attempts == 1
    assert "outran its time limit" in (status.last_error or "")
    assert "provider 'services'" in (status.last_error or "")


def held_bursts(workers: Workers) -> set[str]:
    """Ids of burst messages a worker received and has not finished: countdowns it holds."""
    logs = workers.logs()
    task = r"Task ingestion\.burst\[services\]\[([0-9a-f-]{36})\]"
    received = set(re.findall(task + " received", logs))
    finished = set(re.findall(task + " (?:succeeded|failed|raised)", logs))
    return received - finished


@pytest.mark.timeout(120)
def test_a_rest_longer_than_the_countdown_cap_is_never_held_by_the_broker_and_runs_once(
    pg_url: str,
    broker_url: str,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    """A countdown is a message the worker holds unacknowledged until it is due. RabbitMQ closes
    the channel of a consumer that holds one longer than its ``consumer_timeout`` (30 min by
    default), Redis redelivers one held past its visibility timeout. So steps due later than
    ``max_countdown`` are not sent: the reconciler announces them when due. Scaled down here:
    a cap of 2 s, bursts 1 s apart (sent as countdowns), and a rest of 6 s (left to beat).
    tests/test_rabbitmq_consumer_timeout.py waits past a real consumer timeout of 4 s."""
    spec = provider_spec(source_server, burst_length=0.1, burst_interval=1.0, rest_length=6)
    source.count, source.delay = 150, 0.02  # 6 pages, in 2 or 3 bursts
    workers = workers_factory(pg_url, broker_url, [spec], max_countdown=2)
    workers.start("w1")
    workers.start_beat()
    client = client_ingestion(workers)
    wait_for_completed(client, 1)
    first = completed_cycles(client)[0]
    assert first["bursts"] >= 2, "bursts of the cycle were sent with a countdown under the cap"

    # While the provider rests, no message for it waits in the worker or in the queue.
    status = client.store.status("services")
    assert status.action is Action.REST
    assert "Task ingestion.burst[services][" in workers.logs()
    wait_until(lambda: not held_bursts(workers), timeout=2, what="no burst held by the worker")
    assert queue_length(broker_url, workers.queue) == 0
    with client.store.db.read() as conn:
        now = client.store.db.now(conn)
    assert status.due_at is not None and (status.due_at - now).total_seconds() > 2

    # When the rest is due, the reconciler announces it and the next cycle runs it once.
    wait_for_completed(client, 2, timeout=60)
    assert "reconciler: announcing services" in workers.logs()
    ran = [b for b in client.store.bursts("services") if b["ticket"] == status.ticket]
    assert len(ran) == 1, ran
    assert not re.search(rf"skipped services ticket {status.ticket}:", workers.logs())
