"""A Celery worker in this process, through the pytest plugin's in-process fixtures.

pytest-celery registers Celery's own fixtures (``celery_app``, ``celery_worker_pool``,
``celery_worker_parameters``, ...); here ``celery_app`` is the ``IncrementalIngestion``'s own
app on Redis. pytest-celery 1.x gives the name ``celery_worker`` to a worker in a Docker
container, which this machine does not run, so :func:`worker` starts the same in-process
worker thread that Celery's fixture of that name starts (``celery.contrib.testing.worker``).
A test can then steer, deliver duplicate messages and read the database without starting
processes. The worker processes of ``test_workers.py`` stay the proof for what only a real
process shows (crashes, time limits, prefork).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController

from ingestion import CycleStatus, IncrementalIngestion, Settings
from ingestion.tasks import BURST
from providers.synthetic import SourceServer, SyntheticProvider, SyntheticSource
from tests.support.paths import unique
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

OPTIONS: dict[str, Any] = {
    "burst_length": 0.2,
    "burst_interval": 0.01,
    "rest_length": 3600,
    "backoff": [0.2],
}


@pytest.fixture
def ingestion(
    database_url: str, redis_url: str, source_server: SourceServer, tmp_path: Path
) -> Iterator[IncrementalIngestion]:
    queue = unique("inprocess")
    ingestion = IncrementalIngestion(
        settings=Settings(
            database_url=database_url,
            broker_url=redis_url,
            broker_dir=tmp_path / "broker",
            queue=queue,
            page_timeout=5,
            time_limit_grace=1,
        )
    )
    ingestion.add_provider(SyntheticProvider("services", source_server.url, 50), **OPTIONS)
    yield ingestion
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def celery_app(ingestion: IncrementalIngestion) -> Celery:
    """pytest-celery's worker runs the ingestion's own app (overrides the plugin's)."""
    return ingestion.celery_app


@pytest.fixture
def celery_worker_parameters(ingestion: IncrementalIngestion) -> dict[str, Any]:
    # The engine's app has no ping task; the worker consumes the ingestion's queue.
    return {"perform_ping_check": False, "queues": [ingestion.settings.queue]}


@pytest.fixture
def worker(
    celery_app: Celery, celery_worker_pool: str, celery_worker_parameters: dict[str, Any]
) -> Iterator[WorkController]:
    """A worker thread of ``celery_app`` for the test, stopped when it ends."""
    with start_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as w:
        yield w


def completed(ingestion: IncrementalIngestion) -> list[dict[str, Any]]:
    cycles = ingestion.store.cycles("services")
    return [c for c in cycles if c["status"] == CycleStatus.COMPLETED]


@pytest.mark.timeout(60)
def test_a_started_cycle_runs_in_bursts_on_the_worker_and_mirrors_the_source(
    ingestion: IncrementalIngestion, source: SyntheticSource, worker: WorkController
) -> None:
    # Given a source of 600 entities, pages of 50 that take 30 ms each, bursts of 200 ms,
    # and a worker in this process
    source.delay = 0.03
    # When an operator starts a cycle
    ingestion.start("services")
    # Then the worker runs it to its end in several bursts
    wait_until(lambda: completed(ingestion), timeout=40, what="a completed cycle")
    [cycle] = completed(ingestion)
    assert cycle["pages"] == 12 and cycle["bursts"] >= 2
    assert set(ingestion.catalog.refs("services")) == source.refs()
    # in this process: the owner of each burst is "<host>/<pid>"
    assert {b["worker"].rsplit("/", 1)[1] for b in ingestion.store.bursts("services")} == {
        str(os.getpid())
    }


@pytest.mark.timeout(60)
def test_the_same_message_delivered_three_times_runs_one_burst(
    ingestion: IncrementalIngestion,
    source: SyntheticSource,
    worker: WorkController,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingestion.engine")
    source.count = 50  # one page: the first burst ends the cycle
    ingestion.store.ensure_providers(["services"])
    doorbell = ingestion.store.start("services")
    # When the same step is sent three times (a broker redelivering it)
    for _ in range(3):
        ingestion.tasks[BURST].apply_async(
            kwargs={"provider": "services", "ticket": doorbell.ticket},
            queue=ingestion.settings.queue,
        )
    # Then one burst ran, and the two others were logged as skipped
    wait_until(lambda: completed(ingestion), timeout=30, what="a completed cycle")
    wait_until(
        lambda: caplog.text.count(f"skipped services ticket {doorbell.ticket}") == 2,
        timeout=30,
        what="two skips logged",
    )
    bursts = ingestion.store.bursts("services")
    assert [b["ticket"] for b in bursts] == [doorbell.ticket]
    assert set(ingestion.catalog.refs("services")) == source.refs()
