"""The app the test workers run: synthetic providers described by ``TEST_PROVIDERS`` (JSON)."""

from __future__ import annotations

import json
import os
from typing import Any

from ingestion import IncrementalIngestion, Settings
from providers.synthetic import SyntheticProvider


def build(
    settings: Settings | None = None, specs: list[dict[str, Any]] | None = None
) -> IncrementalIngestion:
    ingestion = IncrementalIngestion(settings=settings)
    if specs is None:
        specs = json.loads(os.environ.get("TEST_PROVIDERS", "[]"))
    for spec in specs:
        provider = SyntheticProvider(spec["name"], spec["url"], spec.get("per_page", 50))
        ingestion.add_provider(provider, **spec.get("options", {}))
    return ingestion


ingestion = build()
app = ingestion.celery_app
