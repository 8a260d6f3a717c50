"""The benchmark providers and tasks; ``bench.worker`` is the module the workers load.

``BENCH_PROVIDERS`` is a JSON list of
``{"name", "count", "page_size", "latency", "first", "options"}`` (``latency``: seconds a page
takes; ``first``: the number of the provider's first entity, so that providers own apart);
``BENCH_PROVIDERS_FILE`` names a YAML file of the same entries under ``providers:`` (thousands
of providers do not fit in an environment variable). The app
also defines ``bench.relay``, a task that sends itself on and records when each hop ran: the
floor of what one Celery task sending the next costs on the same broker.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import yaml

from bench.source import PAGE_SIZE, BenchProvider
from ingestion import IncrementalIngestion, Settings

RELAY = "bench.relay"


def build(
    settings: Settings | None = None, specs: list[dict[str, Any]] | None = None
) -> IncrementalIngestion:
    ingestion = IncrementalIngestion(settings=settings)
    if specs is None:
        specs = _specs_from_environment()
    for spec in specs:
        provider = BenchProvider(
            spec["name"],
            spec["count"],
            spec.get("page_size", PAGE_SIZE),
            latency=spec.get("latency", 0.0),
            first=spec.get("first", 0),
        )
        ingestion.add_provider(provider, **spec.get("options", {}))
    _register_relay(ingestion)
    return ingestion


def _specs_from_environment() -> list[dict[str, Any]]:
    path = os.environ.get("BENCH_PROVIDERS_FILE")
    if path:
        with open(path, encoding="utf-8") as data:
            loaded: list[dict[str, Any]] = yaml.safe_load(data)["providers"]
        return loaded
    specs: list[dict[str, Any]] = json.loads(os.environ.get("BENCH_PROVIDERS", "[]"))
    return specs


def _register_relay(ingestion: IncrementalIngestion) -> None:
    app = ingestion.celery_app

    clients: list[Any] = []

    @app.task(name=RELAY, shared=False)  # type: ignore[untyped-decorator]
    def relay(hops: int, key: str) -> None:
        """Record when this hop started and ended (wall clock), then send the next hop."""
        import redis

        started = time.time()
        if not clients:
            clients.append(redis.Redis.from_url(app.conf.broker_url))
        ended = time.time()
        if hops > 1:
            relay.apply_async(args=(hops - 1, key), queue=ingestion.settings.queue)
        clients[0].rpush(key, json.dumps([started, ended]))
