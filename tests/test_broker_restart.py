"""A Redis broker restarted under a worker that holds an unacknowledged message.

The worker must survive the broker going away with a burst running (its message unacknowledged,
``task_acks_late``) or with the next burst's countdown reserved, and the cycle must complete once
the broker is back. Each test runs a Redis server of its own, so that it can be restarted.
With celery 5.7.0 the worker's main process died of it (see the bound in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.servers import ThrowawayRedis
from ingestion import CycleStatus, IncrementalIngestion
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.ingestions import client_ingestion
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.workers


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def completed(client: IncrementalIngestion) -> list[dict[str, Any]]:
    return [c for c in client.store.cycles("services") if c["status"] == CycleStatus.COMPLETED]


def unacked(server: ThrowawayRedis) -> int:
    client = server.client()
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("in_flight", ["burst", "countdown"])
def test_a_worker_survives_a_broker_restart_and_the_cycle_completes(
    in_flight: str,
    tmp_path: Path,
    throwaway_redis: ThrowawayRedis,
    source: SyntheticSource,
    source_server: SourceServer,
    workers_factory: Callable[..., Workers],
) -> None:
    if in_flight == "burst":  # bursts of about 1 s, each page 0.1 s
        source.delay, burst_length, burst_interval = 0.1, 1.0, 0.05
    else:  # short bursts, then a 4 s countdown reserved by the worker
        source.delay, burst_length, burst_interval = 0.01, 0.2, 4.0
    spec = {
        "name": "services",
        "url": source_server.url,
        "per_page": 25,
        "options": {
            "burst_length": burst_length,
            "burst_interval": burst_interval,
            "rest_length": 3600,
            "backoff": [0.5, 0.5, 0.5],
        },
    }
    database_url = f"sqlite:///{tmp_path / 'ingestion.db'}"
    workers = workers_factory(database_url, throwaway_redis.url(), [spec])
    # Two pool processes: the consumer keeps a BRPOP in flight while a burst runs, as a worker
    # with free pool processes does.
    worker = workers.start("w1", concurrency=2)
    beat = workers.start_beat()
    client = client_ingestion(workers)

    def holding_a_message() -> bool:
        bursts = client.store.bursts("services")
        running = [b for b in bursts if b["outcome"] == "running"]
        if in_flight == "burst":
            ready = any(b["pages"] >= 2 for b in running)
        else:
            ready = not running and any(b["outcome"] == "continued" for b in bursts)
        return ready and unacked(throwaway_redis) >= 1

    wait_until(holding_a_message, timeout=60, what=f"the worker holding a {in_flight} message")
    throwaway_redis.restart()  # no persistence: the reconciler announces the step again

    def cycle_completed() -> bool:
        assert worker.poll() is None, "the worker's main process exited:\n" + workers.logs()
        assert beat.poll() is None, "celery beat exited:\n" + workers.logs()
        return bool(completed(client))

    wait_until(cycle_completed, timeout=90, what="the cycle completed")
    log = workers.log("w1")
    assert b"Connection to broker lost" in log, "the worker never saw the restart"
    assert b"Unrecoverable error" not in log, workers.logs()
    assert set(client.catalog.refs("services")) == source.refs()
