"""The ``ingestion`` command: see and steer providers, read the catalog, serve the API.

Every command loads the app named by ``--app MODULE[:ATTRIBUTE]`` (or ``INGESTION_APP``), the
same module the workers run with ``celery -A``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ingestion.api import (
    ApiSettings,
    Entity,
    ErrorRecord,
    InsecureConfiguration,
    ProviderDetail,
    create_api,
    database_message,
    provider_detail,
    step_result,
)
from ingestion.app import IncrementalIngestion
from ingestion.engine import BurstReport
from ingestion.ops.loader import APP_ENV, AppNotFound, load_ingestion
from ingestion.provider import ProviderConfigError
from ingestion.store import Doorbell, ErrorKind, UnknownProvider

cli = typer.Typer(
    name="ingestion",
    help="Operate incremental ingestion: providers, cycles, errors, the catalog, the admin API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback's locals could hold a secret
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="The provider's name.")]


class Failure(Exception):
    """An operator-facing failure: printed as one line, exit status 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    raise Failure(message, code)


@cli.callback()
def main_options(
    ctx: typer.Context,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            envvar=APP_ENV,
            help="MODULE[:ATTRIBUTE] that builds your IncrementalIngestion (as for celery -A).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the engine.")] = False,
) -> None:
    """Operate incremental ingestion."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = app


def _ingestion(ctx: typer.Context) -> IncrementalIngestion:
    try:
        return load_ingestion(ctx.obj)
    except AppNotFound as exc:
        fail(str(exc), 2)
    except ProviderConfigError as exc:
        fail(f"the app's provider configuration is invalid: {exc}", 2)
    except ValueError as exc:  # the app refused its configuration, saying why
        fail(str(exc), 2)


def _registered(ingestion: IncrementalIngestion, name: str) -> None:
    try:
        ingestion.registered(name)
    except KeyError as exc:
        fail(str(exc.args[0]))


def _dump(value: Any) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list) and all(isinstance(v, BaseModel) for v in value):
        text = json.dumps([v.model_dump(mode="json") for v in value], indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    out.print_json(text) if out.is_terminal else print(text)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = (moment - datetime.now(UTC)).total_seconds()
    relative = _duration(abs(seconds))
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if abs(seconds) < 1:
        return f"now ({stamp})"
    return f"in {relative} ({stamp})" if seconds > 0 else f"{relative} ago ({stamp})"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    text = " ".join(p for p in parts if p)
    return f"{text} {secs}s".strip() if secs or not text else text


# -- reading ------------------------------------------------------------------------------


@cli.command()
def providers(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every registered provider and where it stands."""
    ingestion = _ingestion(ctx)
    rows = [provider_detail(ingestion, name) for name in sorted(ingestion.providers)]
    if as_json:
        _dump(rows)
        return
    table = Table("provider", "now", "next", "when", "attempts", "entities", "last error")
    for row in rows:
        table.add_row(
            row.name,
            row.current_action,
            row.next_action or "-",
            _when(row.next_action_at),
            str(row.attempts),
            str(row.entities),
            row.last_error.message if row.last_error else "",
        )
    out.print(table)


@cli.command()
def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One provider; all when omitted.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Where a provider stands: actions, attempts, last error, cycle progress, sweeps."""
    ingestion = _ingestion(ctx)
    names = sorted(ingestion.providers)
    if name is not None:
        _registered(ingestion, name)
        names = [name]
    details = [provider_detail(ingestion, n) for n in names]
    if as_json:
        _dump(details[0] if name is not None else details)
        return
    for detail in details:
        out.print(_status_table(detail))


def _status_table(d: ProviderDetail) -> Table:
    table = Table(title=f"provider {d.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("now", d.current_action + (f" on {d.worker}" if d.worker else ""))
    table.add_row("next action", f"{d.next_action or '-'} {_when(d.next_action_at)}")
    table.add_row("attempts", str(d.attempts))
    table.add_row("entities", str(d.entities))
    if d.last_error:
        table.add_row("last error", f"{d.last_error.message} ({_when(d.last_error.at)})")
    if d.current_cycle:
        c = d.current_cycle
        table.add_row(
            "current cycle",
            f"#{c.id} since {_when(c.started_at)}: {c.bursts} bursts, {c.pages} pages, "
            f"{c.entities} entities marked, {c.rejected} rejected",
        )
    if d.last_completed_cycle:
        c = d.last_completed_cycle
        took = _duration(c.duration_seconds) if c.duration_seconds is not None else "-"
        table.add_row(
            "last completed",
            f"#{c.id} ended {_when(c.ended_at)}: {c.entities} entities, {c.removed} removed, "
            f"took {took}",
        )
    if d.blocked_sweep:
        b = d.blocked_sweep
        table.add_row("blocked sweep", f"{b.count} removals held back: {b.reason}")
    return table


@cli.command()
def marks(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
    cycle: Annotated[int | None, typer.Option(help="Only this cycle's marks.")] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the marks of closed cycles instead.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The provider's page marks, newest first (or delete closed cycles' marks)."""
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    if delete:
        deleted = ingestion.store.delete_finished_marks(name)
        _dump({"deleted": deleted}) if as_json else out.print(f"deleted {deleted} marks")
        return
    rows = ingestion.store.marks(name, limit=limit, cycle_id=cycle)
    if as_json:
        _dump(rows)
        return
    table = Table("id", "cycle", "page", "entities", "cursor", "at")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["cycle_id"]),
            str(row["sequence"]),
            str(row["entities"]),
            row["cursor"] or "",
            _when(row["created_at"]),
        )
    out.print(table)


@cli.command()
def cleanup(ctx: typer.Context) -> None:
    """Delete the marks of every provider's closed cycles."""
    deleted = _ingestion(ctx).store.delete_finished_marks()
    out.print(f"deleted {deleted} marks of closed cycles")


@cli.command()
def errors(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
    before: Annotated[int | None, typer.Option(help="Only records older than this id.")] = None,
    kind: Annotated[list[ErrorKind] | None, typer.Option(help="entity, warning or burst.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rejected entities and burst errors, newest first."""
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    rows = [
        ErrorRecord(**r)
        for r in ingestion.store.errors(name, limit=limit, before=before, kinds=kind)
    ]
    if as_json:
        _dump(rows)
        return
    table = Table("id", "kind", "cycle", "page", "entity", "rule", "message", "at")
    for row in rows:
        table.add_row(
            str(row.id),
            row.kind,
            str(row.cycle_id or ""),
            str(row.page or ""),
            row.entity or "",
            row.rule or "",
            row.message.split("\n", 1)[0],
            _when(row.created_at),
        )
    out.print(table)
    if len(rows) == limit:
        out.print(f"older records: --before {rows[-1].id}")


@cli.command()
def entities(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="Show this entity (kind:namespace/name) in full.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's entities.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only entities of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    after: Annotated[str | None, typer.Option(help="The last ref of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List catalog entities in ref order, or show one."""
    ingestion = _ingestion(ctx)
    if ref is not None:
        found = ingestion.store.entity(ref)
        if found is None:
            fail(f"no entity {ref.lower()!r} in the catalog")
        _dump(Entity(**found))
        return
    if provider is not None:
        _registered(ingestion, provider)
    rows = [
        Entity(**r)
        for r in ingestion.store.entities_page(
            provider=provider, kind=kind, after=after.lower() if after else None, limit=limit
        )
    ]
    if as_json:
        _dump(rows)
        return
    table = Table("ref", "provider", "updated")
    for row in rows:
        table.add_row(row.ref, row.provider, _when(row.updated_at))
    out.print(table)
    if len(rows) == limit:
        out.print(f"next page: --after {rows[-1].ref}")


# -- steering -----------------------------------------------------------------------------


def _steer(
    ctx: typer.Context, name: str, step: Callable[[IncrementalIngestion, str], Doorbell], what: str
) -> None:
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    result = step_result(step(ingestion, name), what)
    out.print(f"{result.message}; next: {result.next_action} {_when(result.next_action_at)}")


@cli.command()
def trigger(ctx: typer.Context, name: NameArg) -> None:
    """Run the provider's pending step now."""
    _steer(ctx, name, IncrementalIngestion.trigger, "the pending step is due now")


@cli.command()
def start(ctx: typer.Context, name: NameArg) -> None:
    """End the rest, or cancel the open cycle, and begin a new cycle now."""
    _steer(ctx, name, IncrementalIngestion.start, "a new cycle begins now")


@cli.command()
def cancel(ctx: typer.Context, name: NameArg) -> None:
    """Cancel the open cycle (no sweep); the provider rests until started."""
    _steer(ctx, name, IncrementalIngestion.cancel, "the open cycle is cancelled")


@cli.command()
def reset(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Purge the provider's ingestion records and begin afresh; its entities stay."""
    if not yes:
        question = f"Purge the cycles, marks, bursts and errors of {name!r} and start it afresh?"
        try:
            confirmed = typer.confirm(question)
        except typer.Abort:  # no answer (stdin closed)
            confirmed = False
        if not confirmed:
            fail("reset not confirmed; nothing changed (pass --yes to skip the question)")
    _steer(ctx, name, IncrementalIngestion.reset, "records purged; a new cycle begins now")


# -- running ------------------------------------------------------------------------------


@cli.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    ingestion = _ingestion(ctx)
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
    """Serve the admin HTTP API (OpenAPI at /docs, metrics at /metrics)."""
    import uvicorn

    ingestion = _ingestion(ctx)
    settings = ApiSettings()
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    scrape = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    try:
        app = create_api(ingestion, admin_token=admin, metrics_token=scrape, insecure=insecure)
    except InsecureConfiguration as exc:
        fail(str(exc), 2)
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
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
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
            if report.outcome == "failed" and report.next is not None:
                progress.console.print(
                    f"burst {report.burst} failed: {report.reason}; retrying in "
                    f"{_duration(report.next.countdown)}",
                    markup=False,
                )

        ingestion.observers.append(on_burst)
        reports = ingestion.run_cycle(name, progress=on_page)
    last = reports[-1] if reports else None
    if last is None or last.outcome != "done":
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
        _duration(time.monotonic() - started),
    )
    out.print(table)
    if last.sweep and last.sweep.blocked_reason:
        out.print(f"sweep held back {last.sweep.blocked} removals: {last.sweep.blocked_reason}")


# -- entry point --------------------------------------------------------------------------


def _error(message: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


@contextmanager
def _failures() -> Iterator[None]:
    try:
        yield
    except Failure as exc:
        _error(str(exc))
        raise SystemExit(exc.code) from None
    except UnknownProvider as exc:
        _error(str(exc))
        raise SystemExit(1) from None
    except SQLAlchemyError as exc:
        _error(database_message(exc))
        raise SystemExit(1) from None


def main() -> None:
    """Entry point of the ``ingestion`` command."""
    with _failures():
        cli(standalone_mode=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
