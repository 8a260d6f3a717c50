"""The demo: a synthetic source mirrored by a real worker, over two cycles.

``python -m providers.demo`` (or ``make run``) serves a few thousand made-up services on
127.0.0.1, starts a Celery worker on this module, and watches it ingest them in bursts. Then the
source loses 10% and gains 5%, a second cycle runs, and its sweep removes what disappeared.

It runs on the embedded default (SQLite and a file broker under ``demo-data/``) unless
``INGESTION_DATABASE_URL`` and ``CELERY_BROKER_URL`` point at Postgres and Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kombu.utils.url import maybe_sanitize_url
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ingestion import CycleStatus, IncrementalIngestion, Settings
from ingestion.api.errors import database_message
from providers.synthetic import SourceServer, SyntheticProvider, SyntheticSource

NAME = "demo"
DATA = Path("demo-data")
SIZE = int(os.environ.get("DEMO_SIZE", "3000"))
PER_PAGE = 100


def _settings() -> Settings:
    values: dict[str, Any] = {}
    if "INGESTION_DATABASE_URL" not in os.environ:
        values["database_url"] = f"sqlite:///{DATA / 'ingestion.db'}"
    if "INGESTION_BROKER_DIR" not in os.environ:
        values["broker_dir"] = DATA / "broker"
    return Settings(**values)


def build() -> IncrementalIngestion:
    """The demo's ingestion: one provider reading the synthetic source over HTTP."""
    ingestion = IncrementalIngestion(settings=_settings())
    url = os.environ.get("DEMO_SOURCE_URL", "http://127.0.0.1:8765")
    ingestion.add_provider(
        SyntheticProvider(NAME, url, per_page=PER_PAGE),
        burst_length=0.5,
        burst_interval=0.2,
        rest_length=3600,
        backoff=[1, 2, 5],
        reject_removals_above_percentage=15,
    )
    return ingestion


ingestion = build()
app = ingestion.celery_app


def _cycles(client: IncrementalIngestion) -> list[dict[str, Any]]:
    return client.store.cycles(NAME) if NAME in client.store.provider_names() else []


def _watch(
    client: IncrementalIngestion, console: Console, title: str, after: int, pages: int
) -> dict[str, Any]:
    """Show the open cycle's progress until a cycle newer than ``after`` completes."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>4.0f}/{task.total:.0f} pages"),
        TextColumn("{task.fields[entities]:>6} entities"),
        TextColumn("{task.fields[bursts]:>3} bursts"),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + 120
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(title, total=pages, entities=0, bursts=0)
        while time.monotonic() < deadline:
            cycles = [c for c in _cycles(client) if c["id"] > after]
            if cycles:
                cycle = cycles[0]
                progress.update(
                    task,
                    completed=cycle["pages"],
                    entities=cycle["entities"],
                    bursts=cycle["bursts"],
                )
                if cycle["status"] == CycleStatus.COMPLETED:
                    return cycle
            time.sleep(0.1)
    raise SystemExit(f"demo: no cycle completed within 120 s; see {DATA / 'worker.log'}")


def _summary(console: Console, client: IncrementalIngestion, cycles: list[dict[str, Any]]) -> None:
    table = Table(title="Cycles")
    for column in (
        "cycle",
        "bursts",
        "pages",
        "marked",
        "written",
        "unchanged",
        "removed",
        "seconds",
    ):
        table.add_column(column, justify="right")
    for c in cycles:
        seconds = (c["ended_at"] - c["started_at"]).total_seconds()
        table.add_row(
            *(
                str(v)
                for v in (
                    c["id"],
                    c["bursts"],
                    c["pages"],
                    c["entities"],
                    c["written"],
                    c["unchanged"],
                    c["removed"],
                    f"{seconds:.1f}",
                )
            )
        )
    console.print(table)
    workers = {b["worker"] for b in client.store.bursts(NAME, limit=1000)}
    console.print(
        f"Catalog: {client.catalog.count(NAME)} entities; bursts ran on "
        f"{', '.join(sorted(workers))}"
    )


def _shown(url: str) -> str:
    """A database URL as it may be printed: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def main() -> int:
    console = Console()
    if "INGESTION_DATABASE_URL" not in os.environ:
        shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(exist_ok=True)
    source = SyntheticSource(count=SIZE, per_page=PER_PAGE, delay=0.03)
    with SourceServer(source) as server:
        os.environ["DEMO_SOURCE_URL"] = server.url
        client = build()
        try:
            client.migrate()
        except SQLAlchemyError as exc:
            console.print(f"[bold red]error:[/] {database_message(exc)}")
            return 1
        if NAME in client.store.provider_names():  # a previous run on a shared database
            client.reset(NAME)
            client.store.delete_entities(NAME)
        console.print(f"[bold]Source[/]: {SIZE} services at {server.url}, {PER_PAGE} per page")
        console.print(
            f"[bold]State[/]: {_shown(client.settings.database_url)}  "
            f"[bold]Broker[/]: {maybe_sanitize_url(client.settings.broker_url)}"
        )
        log = (DATA / "worker.log").open("wb")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "providers.demo.walkthrough",
                "worker",
                "--beat",
                "--loglevel=INFO",
                "--concurrency=2",
                f"--schedule={DATA / 'beat-schedule'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )
        try:
            pages = -(-SIZE // PER_PAGE)
            first = _watch(client, console, "Cycle 1", 0, pages)
            console.print(f"Cycle 1 complete: {client.catalog.count(NAME)} entities in the catalog")
            source.drop(0.10)
            source.grow(0.05)
            expected = source.refs()
            console.print(
                f"The source changes: now {len(expected)} services "
                f"(10% gone, 5% new). Starting cycle 2."
            )
            client.start(NAME)
            second = _watch(client, console, "Cycle 2", first["id"], -(-len(expected) // PER_PAGE))
            _summary(console, client, [first, second])
            matches = set(client.catalog.refs(NAME)) == expected
            console.print(
                "[green]The catalog equals the source."
                if matches
                else "[red]The catalog differs from the source."
            )
            if matches:
                app = "--app providers.demo.walkthrough"
                console.print(
                    f"Look around: [bold].venv/bin/ingestion {app} status {NAME}[/] (or "
                    f"[bold]checkpoints {NAME}[/], [bold]entities[/], [bold]changes[/]); "
                    f"[bold].venv/bin/ingestion {app} api --insecure[/] serves the operator page."
                )
            return 0 if matches else 1
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
