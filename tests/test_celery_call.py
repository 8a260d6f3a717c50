"""``celery -A <app> call ingestion.trigger|start|cancel`` steers a provider a worker runs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from ingestion.store import Store
from providers.synthetic import SourceServer
from tests.support.paths import ROOT
from tests.support.processes import celery
from tests.support.waiting import wait_until
from tests.support.workers import Workers

APP = "tests.support.synthetic_app"
OPTIONS = {"burst_length": 0.3, "burst_interval": 0.1, "rest_length": 3600, "backoff": [0.5]}


def celery_call(workers: Workers, task: str, provider: str) -> str:
    """Run ``celery -A APP call TASK --args='["PROVIDER"]'``; returns the task id it prints."""
    done = subprocess.run(
        celery(APP, "call", task, f'--args=["{provider}"]'),
        cwd=ROOT,
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id), done.stdout
    return task_id


def last_completed(store: Store) -> int:
    if "services" not in store.provider_names():
        return 0  # the worker has not registered it yet
    cycle = store.status("services").last_completed_cycle
    return int(cycle["id"]) if cycle else 0


def completed_after(store: Store, cycle: int) -> Callable[[], Any]:
    return lambda: last_completed(store) > cycle


@pytest.mark.workers
def test_celery_call_triggers_starts_and_cancels_a_provider(
    pg_url: str, broker_url: str, source_server: SourceServer, workers_factory: Any
) -> None:
    source = source_server.source
    workers = workers_factory(
        pg_url,
        broker_url,
        providers=[
            {"name": "services", "url": source_server.url, "per_page": 50, "options": OPTIONS}
        ],
    )
    workers.start("w1")
    store = Store(pg_url)
    try:
        # Given the provider's first cycle done, and the provider resting for an hour
        wait_until(completed_after(store, 0), timeout=60, what="the first cycle")
        first = last_completed(store)

        # When an operator calls ingestion.trigger, the rest ends and a cycle runs
        celery_call(workers, "ingestion.trigger", "services")
        wait_until(completed_after(store, first), timeout=60, what="the triggered cycle")
        triggered = last_completed(store)

        # When an operator calls ingestion.start, a new cycle runs
        celery_call(workers, "ingestion.start", "services")
        wait_until(completed_after(store, triggered), timeout=60, what="the started cycle")
        started = last_completed(store)

        # When an operator calls ingestion.cancel during a cycle, it is cancelled, not swept
        source.delay = 1.0  # 12 pages: the cycle outlasts the `celery call` that cancels it
        celery_call(workers, "ingestion.start", "services")

        def running_cycle() -> int | None:
            current = store.status("services").current_cycle
            if current and current["id"] > started and current["pages"] >= 1:
                return int(current["id"])
            return None

        cancelled = wait_until(running_cycle, timeout=60, what="a cycle with a page")
        celery_call(workers, "ingestion.cancel", "services")
        wait_until(
            lambda: (
                {c["id"]: c["status"] for c in store.cycles("services")}[cancelled] == "cancelled"
            ),
            timeout=30,
            what="the cycle to be cancelled",
        )
        status = store.status("services")
        assert status.current_cycle is None
        assert status.action.value == "rest"
        assert last_completed(store) == started
        assert store.count_entities("services") == 600

        # And the provider is not stuck: start runs a new cycle to its end
        source.delay = 0.0
        celery_call(workers, "ingestion.start", "services")
        wait_until(completed_after(store, cancelled), timeout=60, what="the restarted cycle")
    finally:
        store.dispose()

    logs = workers.logs()
    assert "Task ingestion.trigger[" in logs and "Task ingestion.cancel[" in logs
    # One structured line per burst: provider, cycle, burst number, pages, entities, duration.
    lines = re.findall(
        r"burst provider=services cycle=(\d+) burst=(\d+) pages=(\d+) entities=(\d+) .*"
        r"duration=([\d.]+)s outcome=(\w+)",
        logs,
    )
    assert any(outcome == "done" for *_, outcome in lines)
    assert {int(cycle) for cycle, *_ in lines} >= {first, triggered, started}
