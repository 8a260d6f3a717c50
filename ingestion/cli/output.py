"""What the ``ingestion`` command prints: JSON, tables, and moments and durations people read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ingestion.api import ProviderDetail
from ingestion.catalog import CatalogEntity
from ingestion.state import Phase

out = Console()
err = Console(stderr=True)


def dump(value: Any) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list) and all(isinstance(v, BaseModel) for v in value):
        text = json.dumps([v.model_dump(mode="json") for v in value], indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    out.print_json(text) if out.is_terminal else print(text)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = (moment - datetime.now(UTC)).total_seconds()
    relative = duration(abs(seconds))
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if abs(seconds) < 1:
        return f"now ({stamp})"
    return f"in {relative} ({stamp})" if seconds > 0 else f"{relative} ago ({stamp})"


def duration(seconds: float) -> str:
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


def status_table(d: ProviderDetail) -> Table:
    table = Table(title=f"provider {d.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    action = d.action.value if d.action else "unscheduled"
    table.add_row("action", f"{action}, due {when(d.due_at)}")
    table.add_row("running", f"yes, on {d.worker}" if d.worker else "no")
    table.add_row("attempts", str(d.attempts))
    table.add_row("entities", str(d.entities))
    if d.last_error:
        table.add_row("last error", f"{d.last_error.message} ({when(d.last_error.at)})")
    if d.current_cycle:
        c = d.current_cycle
        table.add_row(
            "current cycle",
            f"#{c.id} since {when(c.started_at)}: {c.bursts} bursts, {c.pages} pages, "
            f"{c.entities} entities marked, {c.rejected} rejected",
        )
    if d.last_completed_cycle:
        c = d.last_completed_cycle
        took = duration(c.duration_seconds) if c.duration_seconds is not None else "-"
        table.add_row(
            "last completed",
            f"#{c.id} ended {when(c.ended_at)}: {c.entities} entities, {c.removed} removed, "
            f"took {took}",
        )
    if d.current_cycle and d.current_cycle.phase != Phase.INGEST:
        c = d.current_cycle
        table.add_row("removal checks", f"{c.checked} candidates asked, {c.kept} still there")
    if d.blocked_sweep:
        b = d.blocked_sweep
        table.add_row("blocked sweep", f"{b.count} removals held back: {b.reason}")
    if d.waiting_removals:
        table.add_row(
            "waiting removals", f"{d.waiting_removals} missing, kept by remove_after_missed_cycles"
        )
    return table


def entity_table(
    rows: list[CatalogEntity], limit: int, as_json: bool, *, empty: str = "No entity."
) -> None:
    if as_json:
        dump(rows)
        return
    if not rows:
        out.print(empty)
        return
    table = Table("ref", "provider", "updated")
    for row in rows:
        table.add_row(row.ref, row.provider, when(row.updated_at))
    out.print(table)
    if len(rows) == limit:
        out.print(f"next page: --after {rows[-1].ref}")
