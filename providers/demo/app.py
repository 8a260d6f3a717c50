"""A demo deployment: providers that read synthetic sources served over HTTP.

The app (``--app providers.demo.app``, ``celery -A providers.demo.app``) registers one provider
per entry of ``INGESTION_DEMO_PROVIDERS`` (``name=url,name=url``; by default ``services`` and
``libraries`` on ports 8701 and 8702). ``python -m providers.demo.app serve --port 8701`` serves a
source; ``make cluster`` starts both. A provider token in ``INGESTION_DEMO_TOKEN``, if set, is sent
to the source as a bearer token, as a real API would require.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx

from ingestion.app import IncrementalIngestion
from ingestion.settings import Settings
from providers.synthetic import SourceServer, SyntheticProvider, SyntheticSource

PROVIDERS_ENV = "INGESTION_DEMO_PROVIDERS"
TOKEN_ENV = "INGESTION_DEMO_TOKEN"
DEFAULT_PROVIDERS = "services=http://127.0.0.1:8701,libraries=http://127.0.0.1:8702"

#: Short bursts and intervals, so that a demo shows many bursts spread over the workers.
DEMO_OPTIONS: dict[str, Any] = {
    "burst_length": 0.5,
    "burst_interval": 0.2,
    "rest_length": 3600,
    "backoff": [1, 5, 30],
}


class DemoProvider(SyntheticProvider):
    """A synthetic provider whose entities carry its name, so that several can share a catalog."""

    def __init__(self, name: str, base_url: str, per_page: int = 50, token: str | None = None):
        super().__init__(name, base_url, per_page)
        self._token = token

    def around(self, burst: Callable[[httpx.Client], Any]) -> None:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0) as client:
            burst(client)

    def shape(self, entity: dict[str, Any]) -> dict[str, Any]:
        entity["metadata"]["name"] = f"{self.name}-{entity['metadata']['name']}"
        return entity

    def __repr__(self) -> str:
        return f"DemoProvider({self.name!r}, {self.base_url!r})"  # never the token


def demo_ref(provider: str, number: int) -> str:
    """The ref of member ``number`` of a demo provider's source."""
    return f"component:default/{provider}-service-{number:07d}"


def parse_providers(text: str) -> dict[str, str]:
    """``name=url,name=url`` as a mapping; raises ``ValueError`` naming the bad entry."""
    found: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = entry.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"{PROVIDERS_ENV}: expected name=url, got {entry!r}")
        found[name] = url
    return found


def build(settings: Settings | None = None) -> IncrementalIngestion:
    """The demo app, configured from the environment."""
    ingestion = IncrementalIngestion(settings=settings)
    token = os.environ.get(TOKEN_ENV) or None
    for name, url in parse_providers(os.environ.get(PROVIDERS_ENV, DEFAULT_PROVIDERS)).items():
        ingestion.add_provider(DemoProvider(name, url, token=token), **DEMO_OPTIONS)
    return ingestion


ingestion = build()
app = ingestion.celery_app


def serve(port: int, count: int, per_page: int, host: str = "127.0.0.1") -> None:
    """Serve a synthetic source on ``host:port`` until SIGTERM or SIGINT."""
    source = SyntheticSource(count=count, per_page=per_page)
    with SourceServer(source, port, host) as server:  # 0.0.0.0 in a container
        print(f"demo source with {count} services at {server.url}/services", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m providers.demo.app")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve a synthetic source")
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--count", type=int, default=2000)
    serving.add_argument("--per-page", type=int, default=50)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    serve(args.port, args.count, args.per_page, args.host)


if __name__ == "__main__":
    main()
