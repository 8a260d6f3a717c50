"""`make run`'s demo works end to end on the embedded default (no Postgres, no Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.paths import ROOT, unique

pytestmark = pytest.mark.workers


def run_demo(tmp_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m providers.demo`` in ``tmp_path``, configured by ``env`` alone."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTION_", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "-m", "providers.demo"],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(120)
def test_the_demo_ingests_two_cycles_and_ends_equal_to_its_source(tmp_path: Path) -> None:
    result = run_demo(tmp_path, 110, DEMO_SIZE="600")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ingestion-files://" in result.stdout
    assert "The catalog equals the source." in result.stdout
    assert (tmp_path / "demo-data" / "ingestion.db").exists()


@pytest.mark.timeout(60)
def test_the_demo_on_a_database_no_one_created_says_so_without_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url).set(database=unique("never_created"), password="s3cret-password")
    result = run_demo(
        tmp_path, 50, INGESTION_DATABASE_URL=url.render_as_string(hide_password=False)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "does not exist" in output and "createdb" in output
    assert "Traceback" not in output
    assert "s3cret-password" not in output
