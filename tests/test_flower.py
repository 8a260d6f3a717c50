"""Flower, as a real process on Redis, shows each provider's bursts by name and never a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.store import Store
from providers.synthetic import SourceServer, SyntheticSource
from tests.support.paths import ROOT, unique
from tests.support.processes import Service, celery, free_port, http_ready
from tests.support.waiting import wait_until

ADMIN_TOKEN = "flower-test-admin-token-5f1e2d3c"
PROVIDER_TOKEN = "provider-token-9a8b7c6d5e4f"
FLOWER_USER, FLOWER_PASSWORD = "operator", "flower-password-1a2b3c4d"


@pytest.mark.workers
def test_flower_lists_each_providers_bursts_with_readable_arguments(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    # A name of its own: Flower sees every task event on the broker, other tests' too.
    name = unique("services")
    source = SyntheticSource(count=600, per_page=50, delay=0.05)
    with SourceServer(source) as server:
        env = dict(os.environ)
        env.update(
            {
                "INGESTION_DATABASE_URL": pg_url,
                "CELERY_BROKER_URL": redis_url,
                "INGESTION_QUEUE": unique("flower-test"),
                "INGESTION_DEMO_PROVIDERS": f"{name}={server.url}",
                "INGESTION_DEMO_TOKEN": PROVIDER_TOKEN,
                "INGESTION_ADMIN_TOKEN": ADMIN_TOKEN,
                "INGESTION_RECONCILE_INTERVAL": "1",
                "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
                "PYTHONPATH": str(ROOT),
            }
        )
        port = free_port()
        flower_url = f"http://127.0.0.1:{port}"
        auth = (FLOWER_USER, FLOWER_PASSWORD)
        flower = Service(
            "flower",
            celery("providers.demo.app", "flower", "--address=127.0.0.1", f"--port={port}"),
            env,
            tmp_path,
        )
        worker: Service | None = None
        try:
            flower.wait_ready(http_ready(flower_url + "/healthcheck"))
            worker = Service(
                "worker",
                celery(
                    "providers.demo.app",
                    "worker",
                    "--loglevel=INFO",
                    "--hostname=flower-worker@%h",
                    "--concurrency=1",
                ),
                env,
                tmp_path,
            )
            worker.wait_ready(lambda: " ready." in worker.log() if worker else False)

            # When the worker runs the provider's first cycle
            store = Store(pg_url)
            wait_until(
                lambda: (
                    store.provider_names() == [name]
                    and store.status(name).last_completed_cycle is not None
                ),
                timeout=60,
                what="the first cycle",
            )
            bursts = store.bursts(name)
            store.dispose()
            assert len(bursts) >= 2

            # Then Flower lists every burst under the provider's name, with its state
            def burst_number(task: dict[str, Any]) -> int:
                return int(task["kwargs"].split("'burst': ")[1].rstrip("}"))

            def flower_bursts() -> dict[str, Any] | None:
                response = httpx.get(
                    flower_url + "/api/tasks",
                    params={"taskname": f"ingestion.burst[{name}]"},
                    auth=auth,
                    timeout=10,
                )
                assert response.status_code == 200, response.text
                tasks: dict[str, Any] = response.json()
                done = {burst_number(t) for t in tasks.values() if t["state"] == "SUCCESS"}
                return tasks if done >= {b["number"] for b in bursts} else None

            tasks = wait_until(flower_bursts, timeout=30, what="Flower to see every burst")
            for task in tasks.values():
                assert task["name"] == f"ingestion.burst[{name}]"
                assert task["worker"].startswith("flower-worker@")
                assert f"'provider': '{name}'" in task["kwargs"]
                assert "'cycle': " in task["kwargs"] and "'ticket': " in task["kwargs"]
                assert task["args"] == "()"
            outcomes = [t["result"] for t in tasks.values() if t["state"] == "SUCCESS"]
            assert any("'outcome': 'done'" in result for result in outcomes)
            # And Flower's API needs its credentials
            assert httpx.get(flower_url + "/api/tasks", timeout=10).status_code == 401

            # And no secret reaches Flower, through its task list, its worker view or its log
            seen = [
                httpx.get(flower_url + "/api/tasks", auth=auth, timeout=10).text,
                httpx.get(
                    flower_url + "/api/workers", params={"refresh": "1"}, auth=auth, timeout=30
                ).text,
                flower.log(),
                worker.log(),
            ]
        finally:
            if worker is not None:
                worker.stop()
            flower.stop()
    for text in seen:
        for secret in (ADMIN_TOKEN, PROVIDER_TOKEN, FLOWER_PASSWORD):
            assert secret not in text
    assert f"burst provider={name}" in seen[3]
