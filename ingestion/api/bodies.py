"""What the admin API answers, and how those bodies are built from the store's records.

The command line prints the same bodies: one description of each thing an operator reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ingestion.catalog import CatalogEntity
from ingestion.errors import UnknownProvider
from ingestion.options import ProviderOptions
from ingestion.state import Action, BurstOutcome, CycleStatus, Phase
from ingestion.store import Doorbell
from ingestion.store.changes import ChangeKind, ChangeSource
from ingestion.store.events import EventStatus

if TYPE_CHECKING:
    from ingestion.app import IncrementalIngestion


class ErrorBody(BaseModel):
    """Every error the API returns."""

    error: str = Field(description="What went wrong, and what to do about it.")
    status: int


class Health(BaseModel):
    healthy: bool
    providers: dict[str, int] = Field(
        default_factory=dict, description="Providers with more than one open cycle: how many."
    )
    error: str | None = None


class CycleProgress(BaseModel):
    id: int
    started_at: datetime
    phase: Phase = Field(
        description="ingest (reading the source), or check (asking the source about the "
        "removal candidates before the sweep)."
    )
    bursts: int
    pages: int
    entities: int = Field(description="Entities marked in this cycle so far.")
    written: int
    unchanged: int
    rejected: int
    checked: int = Field(description="Removal candidates asked about so far.")
    kept: int = Field(description="Candidates the source still holds (not removed).")


class CycleSummary(CycleProgress):
    ended_at: datetime | None
    duration_seconds: float | None
    removed: int
    blocked: int
    blocked_reason: str | None


class CycleRecord(CycleSummary):
    status: CycleStatus


class Cycles(BaseModel):
    items: list[CycleRecord]


class BurstRecord(BaseModel):
    id: int
    cycle_id: int
    number: int = Field(description="The burst's number in its cycle.")
    worker: str
    outcome: BurstOutcome = Field(description="How the burst ended; running until it ends.")
    pages: int
    entities: int
    written: int
    unchanged: int
    rejected: int
    checked: int = Field(0, description="Removal candidates this burst asked the source about.")
    removed: int
    error: str | None = Field(description="The first line of the failure, if the burst failed.")
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None


class Bursts(BaseModel):
    items: list[BurstRecord]


class ErrorRules(BaseModel):
    rules: dict[str, int] = Field(description="Each rule the error records name: how many.")


class BlockedSweep(BaseModel):
    reason: str
    count: int = Field(description="Removals held back (listed by /held-removals).")
    since_cycle: int | None
    held_until_approved: bool = Field(
        False,
        description="Whether they wait for an operator (hold_removals_until_approved) rather "
        "than for a later cycle that finds them still missing.",
    )


class LastError(BaseModel):
    message: str
    at: datetime | None
    detail: str = Field(description="The whole record, traceback included.")


class ProviderSummary(BaseModel):
    name: str
    action: Action | None = Field(
        description="The pending step: ingest (the next burst of the open cycle), check (the "
        "removal checks before the sweep), backoff (a retry after a failed burst), rest (a new "
        "cycle when due) or parked (the source refused; an operator starts it again); null "
        "until a worker or the API registers the provider."
    )
    due_at: datetime | None = Field(description="When the pending step is due.")
    running: bool = Field(description="Whether a burst holds the provider now.")
    attempts: int = Field(description="Failed attempts of the open cycle (0 when healthy).")
    entities: int = Field(description="Entities this provider owns in the catalog.")


class ProviderDetail(ProviderSummary):
    worker: str | None = Field(description="The worker holding the running burst.")
    ticket: int | None
    last_error: LastError | None
    current_cycle: CycleProgress | None
    last_completed_cycle: CycleSummary | None
    blocked_sweep: BlockedSweep | None
    waiting_removals: int = Field(
        0,
        description="Entities missing from the last completed cycle that "
        "remove_after_missed_cycles keeps for now (listed by /waiting-removals).",
    )
    options: ProviderOptions = Field(description="The engine options; durations in seconds.")


class Step(BaseModel):
    provider: str
    message: str
    action: Action = Field(description="The step now pending.")
    due_at: datetime
    ticket: int
    cycle: int | None


class Checkpoint(BaseModel):
    id: int
    cycle_id: int
    sequence: int = Field(description="The page's number in its cycle.")
    cursor: Any = Field(description="The cursor after this page (JSON).")
    entities: int
    created_at: datetime


class Checkpoints(BaseModel):
    items: list[Checkpoint]


class Deleted(BaseModel):
    deleted: int
    message: str


class ErrorRecord(BaseModel):
    id: int
    kind: str
    cycle_id: int | None
    page: int | None
    entity: str | None
    ref: str | None
    rule: str | None
    message: str
    created_at: datetime


class Errors(BaseModel):
    items: list[ErrorRecord]
    next_before: int | None = Field(description="Pass as ?before= for the next page.")


class Entities(BaseModel):
    items: list[CatalogEntity]
    next_after: str | None = Field(description="Pass as ?after= for the next page.")


class Removed(BaseModel):
    removed: int
    message: str


class Kept(BaseModel):
    kept: int
    message: str


class Change(BaseModel):
    """One change of the catalog, as the change feed records it."""

    id: int
    ref: str
    kind: ChangeKind
    provider: str
    source: ChangeSource = Field(description="What made it.")
    cycle_id: int | None = None
    event_id: int | None = None
    entity: dict[str, Any] | None = Field(
        None, description="The entity as written (added, changed); none for a removal."
    )
    created_at: datetime


class Changes(BaseModel):
    items: list[Change]
    next_after: int = Field(
        description="Ask again with after=next_after for the changes that follow."
    )


class EventRecord(BaseModel):
    """A stored event and what each provider made of it."""

    id: int
    topic: str
    delivery_id: str
    status: EventStatus = Field(
        description="pending (not applied yet), applied, or failed (the database refused it)"
    )
    result: dict[str, str] | None = Field(
        None,
        description="Per provider that took it: what it wrote, or why it was rejected or "
        "failed. Empty when no provider took it.",
    )
    received_at: datetime
    applied_at: datetime | None = None


class EventDetail(EventRecord):
    payload: Any
    headers: dict[str, str] = Field(description="As received, without credentials.")


class Events(BaseModel):
    items: list[EventRecord]
    next_before: int | None = Field(
        None, description="Ask again with before=next_before for older events."
    )


class EventAccepted(BaseModel):
    id: int = Field(description="The stored event's id.")
    duplicate: bool = Field(
        description="The delivery id was stored already; the event is applied once."
    )
    message: str


def change_record(row: dict[str, Any]) -> Change:
    return Change.model_validate(row)


def provider_detail(ingestion: IncrementalIngestion, name: str) -> ProviderDetail:
    """Where the registered provider ``name`` stands, as the API and the CLI show it."""
    options = ingestion.registered(name).options
    entities = ingestion.store.count_entities(name)
    try:
        status = ingestion.store.status(name, options)
    except UnknownProvider:
        return ProviderDetail(
            name=name,
            action=None,
            due_at=None,
            running=False,
            attempts=0,
            entities=entities,
            worker=None,
            ticket=None,
            last_error=None,
            current_cycle=None,
            last_completed_cycle=None,
            blocked_sweep=None,
            options=options,
        )
    last_error = None
    if status.last_error:
        last_error = LastError(
            message=status.last_error.split("\n", 1)[0],
            at=status.last_error_at,
            detail=status.last_error,
        )
    last = status.last_completed_cycle
    summary = None
    if last is not None:
        ended = last["ended_at"]
        summary = CycleSummary(
            **last,
            duration_seconds=(ended - last["started_at"]).total_seconds() if ended else None,
        )
    return ProviderDetail(
        name=name,
        action=status.action,
        due_at=status.due_at,
        running=status.running,
        attempts=status.attempts,
        entities=entities,
        worker=status.lease_owner if status.running else None,
        ticket=status.ticket,
        last_error=last_error,
        current_cycle=CycleProgress(**status.current_cycle) if status.current_cycle else None,
        last_completed_cycle=summary,
        blocked_sweep=(
            BlockedSweep(
                **status.blocked_sweep, held_until_approved=options.hold_removals_until_approved
            )
            if status.blocked_sweep
            else None
        ),
        waiting_removals=status.waiting_removals,
        options=options,
    )


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if end else None


def cycle_record(row: dict[str, Any]) -> CycleRecord:
    return CycleRecord(**row, duration_seconds=_seconds(row["started_at"], row["ended_at"]))


def burst_record(row: dict[str, Any]) -> BurstRecord:
    error = row["error"].split("\n", 1)[0] if row["error"] else None
    return BurstRecord(
        **{**row, "error": error},
        duration_seconds=_seconds(row["started_at"], row["ended_at"]),
    )


def step_result(doorbell: Doorbell, message: str) -> Step:
    """What an operator step scheduled, with a sentence saying so."""
    return Step(
        provider=doorbell.provider,
        message=f"provider {doorbell.provider!r}: {message}",
        action=doorbell.action,
        due_at=datetime.now(UTC) + timedelta(seconds=doorbell.countdown),
        ticket=doorbell.ticket,
        cycle=doorbell.cycle_id,
    )


def checkpoint(row: dict[str, Any]) -> Checkpoint:
    cursor = row["cursor"]
    return Checkpoint(**{**row, "cursor": None if cursor is None else json.loads(cursor)})
