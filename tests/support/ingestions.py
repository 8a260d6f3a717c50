"""Building ingestions for tests, and running and inspecting their bursts in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ingestion import CycleStatus, IncrementalIngestion, Settings
from ingestion.settings import EMBEDDED_BROKER
from ingestion.store import ErrorKind
from ingestion.store import models as m
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.support.workers import Workers


def make_ingestion(database_url: str, tmp_path: Path, **settings: Any) -> IncrementalIngestion:
    """An ``IncrementalIngestion`` on ``database_url`` with a file broker under ``tmp_path``."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": EMBEDDED_BROKER,
        "broker_dir": tmp_path / "broker",
        "page_timeout": 5.0,
        "time_limit_grace": 1.0,
    }
    values.update(settings)
    return IncrementalIngestion(settings=Settings(**values))


#: Options for providers whose cycles run in the test process: one burst a cycle, no waits.
FOREGROUND = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}


def services_ingestion(
    database_url: str,
    tmp_path: Path,
    url: str,
    *,
    per_page: int = 10,
    options: dict[str, Any] | None = None,
    **settings: Any,
) -> IncrementalIngestion:
    """An ingestion with one synthetic provider, ``services``, reading ``url``; registered."""
    from tests.support.synthetic_app import build

    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": EMBEDDED_BROKER,
        "broker_dir": tmp_path / "broker",
        "page_timeout": 5.0,
        **settings,
    }
    spec = {"name": "services", "url": url, "per_page": per_page, "options": options or FOREGROUND}
    ingestion = build(Settings(**values), [spec])
    ingestion.register_providers()
    return ingestion


def client_ingestion(workers: Workers) -> IncrementalIngestion:
    """The test process's own view of what the workers run: same providers, database, queue."""
    from tests.support.synthetic_app import build

    env = workers.env
    return build(
        Settings(
            database_url=env["INGESTION_DATABASE_URL"],
            broker_url=env["CELERY_BROKER_URL"],
            broker_dir=Path(env["INGESTION_BROKER_DIR"]),
            queue=env["INGESTION_QUEUE"],
            page_timeout=float(env["INGESTION_PAGE_TIMEOUT"]),
            time_limit_grace=float(env["INGESTION_TIME_LIMIT_GRACE"]),
        ),
        json.loads(env["TEST_PROVIDERS"]),
    )


def one_burst(ingestion: IncrementalIngestion, name: str) -> Any:
    """Begin a cycle and run its first burst in this process."""
    ingestion.store.ensure_providers([name])
    doorbell = ingestion.store.start(name)
    return ingestion.engine.run_step(name, doorbell.ticket, "test/1")


def burst_error(ingestion: IncrementalIngestion, name: str) -> str:
    """The first line of the provider's only burst error."""
    [error] = ingestion.errors(name, kind=ErrorKind.BURST.value)
    message: str = error["message"].split("\n", 1)[0]
    return message


def everything_stored(ingestion: IncrementalIngestion) -> str:
    """Every row of every table, as text."""
    out = []
    with ingestion.store.db.read() as conn:
        for table in m.metadata.sorted_tables:
            out += [repr(tuple(row)) for row in conn.execute(select(table))]
    return "\n".join(out)


def body_refs(ingestion: IncrementalIngestion) -> set[str]:
    """The refs of every stored entity body (``catalog_bodies``), whoever owns them."""
    with ingestion.store.db.read() as conn:
        return set(conn.scalars(select(m.bodies.c.ref)))


def completed_cycles(client: IncrementalIngestion, name: str = "services") -> list[dict[str, Any]]:
    """The provider's completed cycles, newest first."""
    return [c for c in client.store.cycles(name) if c["status"] == CycleStatus.COMPLETED]


def wait_for_completed(client: IncrementalIngestion, count: int, timeout: float = 60) -> None:
    """Wait until ``services`` has completed ``count`` cycles."""
    wait_until(
        lambda: len(completed_cycles(client)) >= count,
        timeout=timeout,
        what=f"{count} completed cycle(s)",
    )
