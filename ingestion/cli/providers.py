"""Commands that read and steer providers: status, checkpoints, errors, held and waiting
removals, trigger, start, cancel, reset."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.table import Table

from ingestion.api import ErrorRecord, checkpoint, provider_detail, step_result
from ingestion.app import IncrementalIngestion
from ingestion.catalog import CatalogEntity
from ingestion.cli.base import JsonFlag, NameArg, app_of, cli, fail, require_provider
from ingestion.cli.output import dump, entity_table, out, status_table, when
from ingestion.store import Doorbell, ErrorKind

# -- reading ------------------------------------------------------------------------------


@cli.command()
def providers(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every registered provider and where it stands."""
    ingestion = app_of(ctx)
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
    ingestion = app_of(ctx)
    names = sorted(ingestion.providers)
    if name is not None:
        require_provider(ingestion, name)
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
    ingestion = app_of(ctx)
    require_provider(ingestion, name)
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
    deleted = app_of(ctx).store.delete_closed_checkpoints()
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
    ingestion = app_of(ctx)
    require_provider(ingestion, name)
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
    ingestion = app_of(ctx)
    require_provider(ingestion, name)
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
    empty = f"provider {name!r}: no removal is held back"
    entity_table([CatalogEntity.from_row(r) for r in rows], limit, as_json, empty=empty)


@cli.command()
def waiting(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    after: Annotated[str | None, typer.Option(help="The last ref of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Entities missing from the last cycle that remove_after_missed_cycles keeps for now."""
    ingestion = app_of(ctx)
    options = ingestion.registered(name).options
    rows = ingestion.store.waiting_removals(name, options, after=after, limit=limit)
    empty = f"provider {name!r}: no entity waits for removal"
    entity_table([CatalogEntity.from_row(r) for r in rows], limit, as_json, empty=empty)


# -- steering -----------------------------------------------------------------------------


def _steer(
    ctx: typer.Context, name: str, step: Callable[[IncrementalIngestion, str], Doorbell], what: str
) -> None:
    ingestion = app_of(ctx)
    require_provider(ingestion, name)
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
        question = (
            f"Purge the cycles, page checkpoints, bursts and errors of {name!r} and start it "
            "afresh (its entities stay)?"
        )
        try:
            confirmed = typer.confirm(question)
        except typer.Abort:  # no answer (stdin closed)
            confirmed = False
        if not confirmed:
            fail("reset not confirmed; nothing changed (pass --yes to skip the question)")
    _steer(ctx, name, IncrementalIngestion.reset, "records purged; a new cycle begins now")
