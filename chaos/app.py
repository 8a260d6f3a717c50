"""The app the chaos workers run: synthetic providers whose ``next()`` takes faults on request.

``CHAOS_PROVIDERS`` is a JSON list of ``{"name", "url", "per_page", "options"}``.
``CHAOS_CONTROL`` names a folder the scenario writes to while the workers run:

- ``hang``: taken by the next call of ``next()``, which then sleeps far past the page timeout;
- ``bad-cursor``: taken by the next call, which returns a cursor JSON cannot encode;
- ``fail-share``: while it exists, each call fails with that probability (e.g. ``0.2``).

A token file is taken with ``os.remove``, so exactly one call in one process acts on it.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx

from ingestion import IncrementalIngestion, Settings
from ingestion.provider import EntityIteratorResult
from providers.synthetic import SyntheticProvider

HANG_SECONDS = 120.0


class InjectedFailure(RuntimeError):
    """A call of ``next()`` the scenario told to fail."""


class ChaosProvider(SyntheticProvider):
    """A :class:`SyntheticProvider` that hangs, fails or breaks its cursor when told to."""

    def __init__(self, name: str, base_url: str, per_page: int, control: Path | None) -> None:
        super().__init__(name, base_url, per_page)
        self.control = control

    def _take(self, token: str) -> bool:
        if self.control is None:
            return False
        try:
            os.remove(self.control / token)
        except FileNotFoundError:
            return False
        return True

    def _fail_share(self) -> float:
        if self.control is None:
            return 0.0
        try:
            return float((self.control / "fail-share").read_text())
        except (FileNotFoundError, ValueError):
            return 0.0

    def next(
        self, context: httpx.Client, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[dict[str, int]]:
        if self._take("hang"):
            time.sleep(HANG_SECONDS)
        share = self._fail_share()
        if share and random.random() < share:
            raise InjectedFailure(f"injected failure of next() (share {share:g})")
        result = super().next(context, cursor)
        if self._take("bad-cursor"):
            broken: Any = {**(result.cursor or {}), "seen": {1, 2}}  # a set: not JSON
            return EntityIteratorResult(done=result.done, entities=result.entities, cursor=broken)
        return result


def build(
    settings: Settings | None = None,
    specs: list[dict[str, Any]] | None = None,
    control: Path | None = None,
) -> IncrementalIngestion:
    """An ingestion with the providers ``specs`` (default: from ``CHAOS_PROVIDERS``)."""
    ingestion = IncrementalIngestion(settings=settings)
    if specs is None:
        specs = json.loads(os.environ.get("CHAOS_PROVIDERS", "[]"))
    if control is None and os.environ.get("CHAOS_CONTROL"):
        control = Path(os.environ["CHAOS_CONTROL"])
    for spec in specs:
        provider = ChaosProvider(spec["name"], spec["url"], spec.get("per_page", 50), control)
        ingestion.add_provider(provider, **spec.get("options", {}))
    return ingestion


ingestion = build()
app = ingestion.celery_app
