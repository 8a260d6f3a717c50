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
from typing import Annotated, NoReturn

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ingestion.api import (
    ApiSettings,
    ErrorRecord,
    checkpoint,
    create_api,
    database_message,
    provider_detail,
    step_result,
)
from ingestion.api.bodies import EventDetail, EventRecord
from ingestion.app import IncrementalIngestion
from ingestion.catalog import CatalogEntity
from ingestion.cli_output import dump, duration, entity_table, err, out, status_table, when
from ingestion.engine import BurstReport
from ingestion.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    IngestionError,
    ProviderConfigError,
)
from ingestion.loader import APP_ENV, load_ingestion
from ingestion.state import BurstOutcome
from ingestion.store import Doorbell, ErrorKind
from ingestion.store.events import EventStatus

cli = typer.Typer(
    name="ingestion",
    help="Operate incremental ingestion: providers, cycles, errors, the catalog, the admin API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback's locals could hold a secret
    add_completion=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="The provider's name.")]


class Failure(Exception):
    """An operator-facing failure: printed as one line, exit status 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``message`` and exit status ``code``."""
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
    """The app named by ``--app``; a configuration it refuses exits with status 2."""
    return load_ingestion(ctx.obj)


def _registered(ingestion: IncrementalIngestion, name: str) -> None:
    ingestion.registered(name)  # UnknownProvider: exit status 1


# -- reading ------------------------------------------------------------------------------


@cli.command()
def providers(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every registered provider and where it stands."""
    ingestion = _ingestion(ctx)
    rows = [provider_detail(ingestion, name) for name in sorted(ingestion.providers)]
    if as_json:
        dump(rows)
        return
    table = Table("provider", "action", "due", "running", "attempts", "entities", "last error")
    for row in rows:
        table.add_row(
            row.name,
            row.action.value if row.action else "unscheduled",
            when(row.due_at),
            "yes" if row.running else "no",
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
        dump(details[0] if name is not None else details)
        return
    for detail in details:
        out.print(status_table(detail))


CheckpointLimit = Annotated[int, typer.Option(min=1, max=10000)]
CheckpointCycle = Annotated[int | None, typer.Option(help="Only this cycle's checkpoints.")]
CheckpointDelete = Annotated[
    bool, typer.Option("--delete", help="Delete the checkpoints of closed cycles instead.")
]


@cli.command()
def checkpoints(
    ctx: typer.Context,
    name: NameArg,
    limit: CheckpointLimit = 20,
    cycle: CheckpointCycle = None,
    delete: CheckpointDelete = False,
    as_json: JsonFlag = False,
) -> None:
    """The provider's page checkpoints (cursor after each page), newest first."""
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    if delete:
        deleted = ingestion.store.delete_closed_checkpoints(name)
        dump({"deleted": deleted}) if as_json else out.print(f"deleted {deleted} checkpoints")
        return
    rows = [checkpoint(r) for r in ingestion.store.checkpoints(name, limit=limit, cycle_id=cycle)]
    if as_json:
        dump(rows)
        return
    table = Table("id", "cycle", "page", "entities", "cursor", "at")
    for row in rows:
        table.add_row(
            str(row.id),
            str(row.cycle_id),
            str(row.sequence),
            str(row.entities),
            json.dumps(row.cursor),
            when(row.created_at),
        )
    out.print(table)


# The name Backstage uses for the same records.
cli.command(name="marks", hidden=True)(checkpoints)


@cli.command()
def cleanup(ctx: typer.Context) -> None:
    """Delete the checkpoints of every provider's closed cycles."""
    deleted = _ingestion(ctx).store.delete_closed_checkpoints()
    out.print(f"deleted {deleted} checkpoints of closed cycles")


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
        dump(rows)
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
            when(row.created_at),
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
        found = ingestion.catalog.get(ref)
        if found is None:
            fail(f"no entity {ref.lower()!r} in the catalog")
        dump(found)
        return
    if provider is not None:
        _registered(ingestion, provider)
    rows = [
        CatalogEntity.from_row(r)
        for r in ingestion.store.entities_page(
            provider=provider, kind=kind, after=after.lower() if after else None, limit=limit
        )
    ]
    entity_table(rows, limit, as_json)


@cli.command()
def held(
    ctx: typer.Context,
    name: NameArg,
    approve: Annotated[
        bool, typer.Option("--approve", help="Remove the held-back entities now.")
    ] = False,
    dismiss: Annotated[
        bool, typer.Option("--dismiss", help="Keep them, and clear the block.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    after: Annotated[str | None, typer.Option(help="The last ref of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The removals a sweep guard holds back; approve (remove) or dismiss (keep) them."""
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    if approve and dismiss:
        fail("choose --approve or --dismiss, not both", 2)
    if approve:
        removed = ingestion.store.approve_held_removals(name)
        out.print(f"provider {name!r}: {removed} held-back entities removed")
        return
    if dismiss:
        kept = ingestion.store.dismiss_held_removals(name)
        out.print(f"provider {name!r}: {kept} held-back entities kept; the block is cleared")
        return
    rows = ingestion.store.held_removals(name, after=after, limit=limit)
    entity_table([CatalogEntity.from_row(r) for r in rows], limit, as_json)


@cli.command()
def waiting(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    after: Annotated[str | None, typer.Option(help="The last ref of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Entities missing from the last cycle that remove_after_missed_cycles keeps for now."""
    ingestion = _ingestion(ctx)
    options = ingestion.registered(name).options
    rows = ingestion.store.waiting_removals(name, options, after=after, limit=limit)
    entity_table([CatalogEntity.from_row(r) for r in rows], limit, as_json)


# -- steering -----------------------------------------------------------------------------


def _steer(
    ctx: typer.Context, name: str, step: Callable[[IncrementalIngestion, str], Doorbell], what: str
) -> None:
    ingestion = _ingestion(ctx)
    _registered(ingestion, name)
    result = step_result(step(ingestion, name), what)
    out.print(f"{result.message}; next: {result.action.value} {when(result.due_at)}")


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
    """Serve the admin HTTP API and the operator page at / (OpenAPI at /docs)."""
    import uvicorn

    ingestion = _ingestion(ctx)
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
def events(
    ctx: typer.Context,
    event_id: Annotated[
        int | None, typer.Argument(help="Show this event in full, with its payload.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
    before: Annotated[int | None, typer.Option(help="Only events older than this id.")] = None,
    status: Annotated[
        EventStatus | None, typer.Option(help="pending (not applied yet) or applied.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Events received from sources, newest first, and what each provider made of them."""
    ingestion = _ingestion(ctx)
    if event_id is not None:
        found = ingestion.store.event(event_id)
        if found is None:
            fail(f"no event {event_id}")
        dump(EventDetail.model_validate(found))
        return
    rows = [
        EventRecord.model_validate(r)
        for r in ingestion.store.recent_events(
            limit=limit, before=before, status=status.value if status else None
        )
    ]
    if as_json:
        dump(rows)
        return
    table = Table("id", "topic", "delivery", "status", "received", "applied", "result")
    for row in rows:
        result = "; ".join(f"{k}: {v}" for k, v in sorted((row.result or {}).items()))
        table.add_row(
            str(row.id),
            row.topic,
            row.delivery_id,
            row.status,
            when(row.received_at),
            when(row.applied_at),
            result or ("no provider took it" if row.status == "applied" else ""),
        )
    out.print(table)
    if len(rows) == limit:
        out.print(f"older events: --before {rows[-1].id}")


@cli.command()
def changes(
    ctx: typer.Context,
    after: Annotated[
        int, typer.Option(min=0, help="Print the changes after this id (0: from the first).")
    ] = 0,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="Changes read from the database at a time.")
    ] = 500,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new changes as they commit.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between two reads while following.")
    ] = 1.0,
) -> None:
    """Print the catalog's change feed, one JSON object per line, oldest first.

    Keep the id of the last line you processed and start again with --after=ID: nothing
    committed after it is missed, nothing before it is repeated.
    """
    ingestion = _ingestion(ctx)
    if follow:
        err.print(f"following the change feed after id {after}; Ctrl-C to stop", markup=False)
    try:
        while True:
            rows = ingestion.store.changes(after=after, limit=limit)
            for row in rows:
                sys.stdout.write(
                    json.dumps({**row, "created_at": row["created_at"].isoformat()}) + "\n"
                )
            sys.stdout.flush()
            if rows:
                after = int(rows[-1]["id"])
            if len(rows) == limit:
                continue
            if not follow:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


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
    except IngestionError as exc:
        _error(_describe_error(exc))
        raise SystemExit(exit_code(exc)) from None
    except SQLAlchemyError as exc:
        _error(database_message(exc))
        raise SystemExit(EXIT_FAILURE) from None


#: Exit statuses: 0 done, 1 the step failed (unknown provider, database, ...), 2 the app or
#: its configuration cannot be used.
EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2


def exit_code(exc: IngestionError) -> int:
    """The exit status of the ``ingestion`` command for an error of the engine."""
    return EXIT_CONFIGURATION if isinstance(exc, ConfigurationError) else EXIT_FAILURE


def _describe_error(exc: IngestionError) -> str:
    if isinstance(exc, DatabaseUnavailable) and isinstance(exc.__cause__, SQLAlchemyError):
        return database_message(exc.__cause__)
    if isinstance(exc, ProviderConfigError):
        return f"the app's provider configuration is invalid: {exc}"
    return str(exc)


def main() -> None:
    """Entry point of the ``ingestion`` command."""
    with _failures():
        cli(standalone_mode=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
