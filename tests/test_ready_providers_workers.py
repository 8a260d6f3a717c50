"""The ready providers through a real worker: ``celery -A providers.app worker`` with a
configuration file, Redis, Postgres, and made-up sources on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest

from ingestion import IncrementalIngestion, Settings
from providers.config import CONFIG_ENV, ingestion_from_config
from tests.support.fake_apis import GitHubApi, ItemsApi, expected_refs, refs
from tests.support.ingestions import everything_stored
from tests.support.paths import ROOT, unique
from tests.support.processes import Service, celery
from tests.support.trees import make_tree
from tests.support.waiting import wait_until

HTTP_TOKEN = "svc-token-made-up-5b9e2c7d1a"
GITHUB_TOKEN = "ghp_madeUpWorkerToken4f8a2b6c9d0e1f"

CONFIG = """\
providers:
  - name: services
    type: http
    url: {items_url}/link
    items: data.items
    pagination: {{style: link}}
    auth: {{token_env: TEST_SERVICES_TOKEN}}
    timeout: 5s
    entity:
      metadata: {{name: "{{slug}}", description: "{{summary}}"}}
      spec: {{type: service, owner: "group:{{team.name}}", lifecycle: production}}
    burst_length: 100ms
    burst_interval: 0s
    rest_length: 1d
    backoff: [1s]
  - name: repos
    type: github
    organization: acme
    token_env: TEST_GITHUB_TOKEN
    api_url: {github_url}
    burst_length: 100ms
    burst_interval: 0s
    rest_length: 1d
    backoff: [100s]
  - name: catalog
    type: files
    directory: catalog
    files_per_page: 6
    burst_length: 100ms
    burst_interval: 0s
    rest_length: 1d
"""


def completed(client: IncrementalIngestion, name: str) -> int:
    return sum(c["status"] == "completed" for c in client.store.cycles(name))


@pytest.mark.workers
def test_a_configured_worker_mirrors_each_source_and_sweeps_its_deletions(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    with (
        ItemsApi(count=130, per_page=25, token=HTTP_TOKEN) as items,
        GitHubApi(count=230, token=GITHUB_TOKEN) as github,
    ):
        # Given three sources, a configuration file, and a GitHub limit that runs out early
        catalog_refs = make_tree(tmp_path / "catalog", teams=30)
        config = tmp_path / "ingestion.yaml"
        config.write_text(dedent(CONFIG.format(items_url=items.url, github_url=github.url)))
        github.limit_for(3, remaining=1)
        queue = unique("ready-providers")
        env = {
            **os.environ,
            CONFIG_ENV: str(config),
            "INGESTION_DATABASE_URL": pg_url,
            "CELERY_BROKER_URL": redis_url,
            "INGESTION_QUEUE": queue,
            "INGESTION_RECONCILE_INTERVAL": "1",
            "INGESTION_RESEND_AFTER": "1",
            "INGESTION_PAGE_TIMEOUT": "10",
            "INGESTION_TIME_LIMIT_GRACE": "2",
            "TEST_SERVICES_TOKEN": HTTP_TOKEN,
            "TEST_GITHUB_TOKEN": GITHUB_TOKEN,
            "PYTHONPATH": str(ROOT),
        }
        args = ["worker", "--beat", f"--schedule={tmp_path / 'beat-schedule'}"]
        args += ["--loglevel=INFO", "--concurrency=1", "--pool=prefork"]
        args += ["--without-mingle", "--without-gossip", f"--hostname=ready-{queue}@%h"]
        worker = Service("worker", celery("providers.app", *args), env, tmp_path)
        client = ingestion_from_config(
            config, settings=Settings(database_url=pg_url, broker_url=redis_url, queue=queue)
        )
        try:
            worker.wait_ready(lambda: " ready." in worker.log())

            # When the worker runs the first cycles
            def mirrors(name: str, expected: Callable[[], set[str]], cycles: int) -> bool:
                done = completed(client, name) >= cycles
                return done and set(client.catalog.refs(name)) == expected()

            sources: dict[str, Callable[[], set[str]]] = {
                "services": lambda: refs(items.ids()),
                "repos": lambda: expected_refs(github),
                "catalog": lambda: catalog_refs,
            }
            for name, expected in sources.items():
                wait_until(lambda n=name, e=expected: mirrors(n, e, 1), timeout=60, what=name)

            # Then each catalog equals its source; GitHub's limit was waited out, not backed off
            bursts = client.store.bursts("repos")
            assert "waiting" in {b["outcome"] for b in bursts}
            assert "failed" not in {b["outcome"] for b in bursts}
            assert client.store.status("repos").attempts == 0

            # When entries disappear at each source and a second cycle runs
            items.remove({0, 64, 129})
            github.remove({"repo-0000", "repo-0101", "repo-0229"})
            shutil.rmtree(tmp_path / "catalog" / "team-07")
            catalog_refs.discard("component:default/svc-07")
            for name in sources:
                client.start(name)

            # Then the sweep removes them
            for name, expected in sources.items():
                wait_until(lambda n=name, e=expected: mirrors(n, e, 2), timeout=60, what=name)
                assert client.store.cycles(name)[0]["removed"] == (1 if name == "catalog" else 3)

            # And the tokens are in no log line and no stored row
            log = worker.log()
            assert "burst provider=services" in log
            for token in (HTTP_TOKEN, GITHUB_TOKEN):
                assert token not in log
                assert token not in everything_stored(client)
        finally:
            worker.stop()
