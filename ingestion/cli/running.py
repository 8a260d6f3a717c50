"""Commands that run something: the schema migration, the admin API, a cycle in the
foreground."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from ingestion.api import ApiSettings, create_api
from ingestion.cli.base import NameArg, app_of, cli, fail, require_provider
from ingestion.cli.output import duration, err, out
from ingestion.engine import BurstReport
from ingestion.state import BurstOutcome

# -- running ------------------------------------------------------------------------------


@cli.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    ingestion = app_of(ctx)
    ingestion.migrate()
    url = make_url(ingestion.settings.database_url).render_as_string(hide_password=True)
    out.print(f"database {url} is at the latest schema")


@cli.command()
def api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Default: INGESTION_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: INGESTION_API_PORT.")] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Serve without INGESTION_ADMIN_TOKEN (local use only)."),
    ] = False,
) -> None:
    """Serve the admin HTTP API and the operator page at / (OpenAPI at /docs)."""
    import uvicorn

    ingestion = app_of(ctx)
    settings = ApiSettings()
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    scrape = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    events = settings.events_token.get_secret_value() if settings.events_token else None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    app = create_api(
        ingestion,
        admin_token=admin,
        metrics_token=scrape,
        events_token=events,
        webhook_secret=secret,
        insecure=insecure,
    )
    uvicorn.run(
        app,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        log_config=None,  # keep the logging set up by the callback
        server_header=False,
    )


@cli.command()
def run(ctx: typer.Context, name: NameArg) -> None:
    """Run one whole cycle of a provider here, in the foreground (for development)."""
    ingestion = app_of(ctx)
    require_provider(ingestion, name)
    if ingestion.settings.auto_migrate:
        ingestion.migrate()
    pages: dict[tuple[int | None, int | None], tuple[int, int]] = {}
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[pages]} pages"),
        TextColumn("{task.fields[entities]} entities"),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(name, total=None, pages=0, entities=0)

        def on_page(report: BurstReport) -> None:
            pages[(report.cycle_id, report.burst)] = (report.pages, report.entities)
            progress.update(
                task,
                pages=sum(p for p, _ in pages.values()),
                entities=sum(e for _, e in pages.values()),
            )

        def on_burst(report: BurstReport) -> None:
            if report.outcome is BurstOutcome.FAILED and report.next is not None:
                progress.console.print(
                    f"burst {report.burst} failed: {report.reason}; retrying in "
                    f"{duration(report.next.countdown)}",
                    markup=False,
                )

        ingestion.observers.append(on_burst)
        reports = ingestion.run_cycle(name, progress=on_page)
    last = reports[-1] if reports else None
    if last is None or last.outcome is not BurstOutcome.DONE:
        reason = last.reason if last is not None else "no burst ran"
        fail(f"provider {name!r}: the cycle did not complete: {reason}")
    removed = last.sweep.removed if last.sweep else 0
    table = Table(title=f"provider {name}: cycle {last.cycle_id} completed", title_justify="left")
    for column in (
        "bursts",
        "pages",
        "entities",
        "written",
        "unchanged",
        "rejected",
        "removed",
        "took",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(reports)),
        str(sum(r.pages for r in reports)),
        str(sum(r.entities for r in reports)),
        str(sum(r.written for r in reports)),
        str(sum(r.unchanged for r in reports)),
        str(sum(r.rejected for r in reports)),
        str(removed),
        duration(time.monotonic() - started),
    )
    out.print(table)
    if last.sweep and last.sweep.blocked_reason:
        out.print(f"sweep held back {last.sweep.blocked} removals: {last.sweep.blocked_reason}")
