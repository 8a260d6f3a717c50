"""The app the test workers run: synthetic providers described by ``TEST_PROVIDERS`` (JSON)."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
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

POOL_PROCESS = "tests.pool_process"


@app.task(name=POOL_PROCESS, shared=False)  # type: ignore[untyped-decorator]
def pool_process(path: str) -> None:
    """Write how the pool process running this task is tuned, as JSON, to ``path``."""
    tuned = {"switch_interval": sys.getswitchinterval(), "frozen": gc.get_freeze_count() > 0}
    partial = Path(f"{path}.partial")
    partial.write_text(json.dumps(tuned), encoding="utf-8")
    partial.replace(path)  # whole, or not there at all
