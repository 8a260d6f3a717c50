"""Commands that read the catalog and what changes it: entities, the events received, the
change feed."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from ingestion.api.bodies import EventDetail, EventRecord
from ingestion.catalog import CatalogEntity
from ingestion.cli.base import JsonFlag, app_of, cli, fail, require_provider
from ingestion.cli.output import dump, entity_table, err, out, when
from ingestion.store.events import EventStatus


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
    ingestion = app_of(ctx)
    if ref is not None:
        found = ingestion.catalog.get(ref)
        if found is None:
            fail(f"no entity {ref.lower()!r} in the catalog")
        dump(found)
        return
    if provider is not None:
        require_provider(ingestion, provider)
    rows = [
        CatalogEntity.from_row(r)
        for r in ingestion.store.entities_page(
            provider=provider, kind=kind, after=after.lower() if after else None, limit=limit
        )
    ]
    entity_table(rows, limit, as_json)


@cli.command()
def events(
    ctx: typer.Context,
    event_id: Annotated[
        int | None, typer.Argument(help="Show this event in full, with its payload.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
    before: Annotated[int | None, typer.Option(help="Only events older than this id.")] = None,
    status: Annotated[
        EventStatus | None,
        typer.Option(
            help="pending (not applied yet), applied, or failed (the database refused it)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Events received from sources, newest first, and what each provider made of them."""
    ingestion = app_of(ctx)
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
    ingestion = app_of(ctx)
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
