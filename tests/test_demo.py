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


@pytest.mark.timeout(60)
def test_the_demo_on_a_database_no_one_created_says_so_without_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url).set(database=unique("never_created"), password="s3cret-password")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTION_", "CELERY_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "INGESTION_DATABASE_URL": url.render_as_string(hide_password=False),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "providers.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "does not exist" in output and "createdb" in output
    assert "Traceback" not in output
    assert "s3cret-password" not in output
