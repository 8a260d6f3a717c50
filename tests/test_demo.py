"""`make run`'s demo works end to end on the embedded default (no Postgres, no Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.workers


@pytest.mark.timeout(120)
def test_the_demo_ingests_two_cycles_and_ends_equal_to_its_source(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTION_", "CELERY_"))}
    env.update({"PYTHONPATH": str(ROOT), "DEMO_SIZE": "600", "COLUMNS": "120"})
    result = subprocess.run(
        [sys.executable, "-m", "providers.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ingestion-files://" in result.stdout
    assert "The catalog equals the source." in result.stdout
    assert (tmp_path / "demo-data" / "ingestion.db").exists()
