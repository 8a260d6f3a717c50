"""Aggregate reads for health checks and metrics: what the operator surfaces ask the store.

Every figure comes from rows the engine commits together with the pages they describe, so the
numbers agree with the catalog whatever worker did the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select

from ingestion import state
from ingestion.state import BurstOutcome, CycleStatus
from ingestion.store import models as m
from ingestion.store.database import Database


def _outcomes(tally: str) -> tuple[str, ...]:
    return tuple(o.value for o in BurstOutcome if o.tally == tally)


@dataclass(frozen=True)
class BurstTotals:
    """One provider's bursts and what they did, over the history the database keeps."""

    provider: str
    started: int
    completed: int
    failed: int
    interrupted: int
    pages: int
    entities: int
    written: int
    unchanged: int
    rejected: int
    removed: int
    checked: int


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (seconds), with their sum and total, for one provider."""

    provider: str
    buckets: list[tuple[float, int]]
    count: int
    total: float


@dataclass(frozen=True)
class ProviderGauge:
    """The state of one provider's row right now."""

    provider: str
    action: str
    due_at: Any
    attempts: int
    running: bool
    blocked: int
    last_error_at: datetime | None  # of the current cycle; a new cycle clears it


def open_cycles(db: Database, *, more_than: int = 1) -> dict[str, int]:
    """Providers with more than ``more_than`` running cycles, and how many each has."""
    c = m.cycles.c
    stmt = (
        select(c.provider, func.count())
        .where(c.status == CycleStatus.RUNNING.value)
        .group_by(c.provider)
        .having(func.count() > more_than)
        .order_by(c.provider)
    )
    with db.read() as conn:
        return {row[0]: int(row[1]) for row in conn.execute(stmt)}


def burst_totals(db: Database) -> list[BurstTotals]:
    """Per provider: bursts started, completed, failed and interrupted, and their counts."""
    b = m.bursts.c

    def outcome_count(outcomes: Sequence[str]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((b.outcome.in_(outcomes), 1), else_=0)), 0)

    stmt = (
        select(
            b.provider,
            func.count(),
            outcome_count(_outcomes("completed")),
            outcome_count(_outcomes("failed")),
            outcome_count(_outcomes("interrupted")),
            func.coalesce(func.sum(b.pages), 0),
            func.coalesce(func.sum(b.entities), 0),
            func.coalesce(func.sum(b.written), 0),
            func.coalesce(func.sum(b.unchanged), 0),
            func.coalesce(func.sum(b.rejected), 0),
            func.coalesce(func.sum(b.removed), 0),
            func.coalesce(func.sum(b.checked), 0),
        )
        .group_by(b.provider)
        .order_by(b.provider)
    )
    with db.read() as conn:
        return [BurstTotals(row[0], *(int(v) for v in row[1:])) for row in conn.execute(stmt)]


def _histograms(
    db: Database, table: Any, where: ColumnElement[bool], bounds: Sequence[float]
) -> list[Histogram]:
    t = table.c
    seconds = db.sql.seconds(t.started_at, t.ended_at)
    columns = [func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0) for b in bounds]
    stmt = (
        select(t.provider, func.count(), func.coalesce(func.sum(seconds), 0.0), *columns)
        .where(where, t.ended_at.is_not(None))
        .group_by(t.provider)
        .order_by(t.provider)
    )
    with db.read() as conn:
        rows = conn.execute(stmt).all()
    return [
        Histogram(
            provider=row[0],
            buckets=[(b, int(n)) for b, n in zip(bounds, row[3:], strict=True)],
            count=int(row[1]),
            total=float(row[2]),
        )
        for row in rows
    ]


def burst_durations(db: Database, bounds: Sequence[float]) -> list[Histogram]:
    """Durations of the bursts that have ended (any outcome), per provider."""
    ended = m.bursts.c.outcome != BurstOutcome.RUNNING.value
    return _histograms(db, m.bursts, ended, bounds)


def cycle_durations(db: Database, bounds: Sequence[float]) -> list[Histogram]:
    """Durations of completed cycles, from their first burst to their sweep, per provider."""
    return _histograms(db, m.cycles, m.cycles.c.status == CycleStatus.COMPLETED.value, bounds)


def provider_gauges(db: Database) -> list[ProviderGauge]:
    """Every provider row: its next action, when, attempts, whether a burst holds it, and
    when its current cycle last recorded an error."""
    p = m.providers.c
    with db.read() as conn:
        now = db.now(conn)
        rows = conn.execute(
            select(
                p.name,
                p.action,
                p.due_at,
                p.attempts,
                p.lease_owner,
                p.lease_expires_at,
                p.blocked_count,
                p.last_error_at,
            ).order_by(p.name)
        ).all()
    return [
        ProviderGauge(
            provider=row.name,
            action=row.action,
            due_at=row.due_at,
            attempts=row.attempts,
            running=state.lease_held(row.lease_owner, row.lease_expires_at, now),
            blocked=row.blocked_count,
            last_error_at=row.last_error_at,
        )
        for row in rows
    ]


def overdue_providers(db: Database, after: timedelta) -> int:
    """Providers whose step has been due for more than ``after`` and that no burst holds
    (parked ones wait for an operator and do not count)."""
    p = m.providers.c
    with db.read() as conn:
        now = db.now(conn)
        return int(
            conn.execute(
                select(func.count())
                .select_from(m.providers)
                .where(p.due_at < now - after, p.action != state.Action.PARKED.value)
                .where((p.lease_owner.is_(None)) | (p.lease_expires_at < now))
            ).scalar_one()
        )


@dataclass(frozen=True)
class FeedStats:
    """Events waiting to be applied, the oldest one's age, and the change feed's last id."""

    events_waiting: int
    oldest_waiting_seconds: float
    last_change_id: int


def feed_stats(db: Database) -> FeedStats:
    e = m.events.c
    with db.read() as conn:
        now = db.now(conn)
        waiting, oldest = conn.execute(
            select(func.count(), func.min(e.received_at)).where(e.status == "pending")
        ).one()
        last = conn.execute(select(func.coalesce(func.max(m.changes.c.id), 0))).scalar_one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return FeedStats(int(waiting), max(age, 0.0), int(last))
