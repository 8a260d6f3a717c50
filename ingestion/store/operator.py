"""Operator steps: trigger, start, cancel and reset a provider; trim history.

Each function runs in a transaction the :class:`~ingestion.store.Store` opened and applies a
transition decided by :mod:`ingestion.state`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select

from ingestion import state
from ingestion.options import ProviderOptions
from ingestion.state import BurstOutcome, CycleStatus, Schedule, Transition
from ingestion.store import models as m
from ingestion.store import transitions as t
from ingestion.store.changes import ChangeSource
from ingestion.store.database import Tx
from ingestion.store.records import Doorbell

OperatorStep = Callable[[Schedule, datetime], Transition]


def replace_step(tx: Tx, name: str, step: OperatorStep) -> Doorbell:
    """Apply an operator's step; a running burst is marked interrupted (its lease is gone)."""
    row = t.lock_provider(tx, name)
    if row.lease_owner is not None:
        t.end_burst_of_ticket(tx, name, row.ticket, BurstOutcome.INTERRUPTED)
    return t.apply(tx, name, step(t.schedule_of(row), tx.now), row.cycle_id)


def trigger(tx: Tx, name: str) -> Doorbell:
    """Make the pending step due now; a running burst is left alone."""
    row = t.lock_provider(tx, name)
    if state.lease_held(row.lease_owner, row.lease_expires_at, tx.now):
        return t.doorbell_of(tx, row)  # a burst is running: nothing to hurry
    return t.apply(tx, name, state.operator_trigger(t.schedule_of(row), tx.now), row.cycle_id)


def start(tx: Tx, name: str) -> Doorbell:
    """Cancel the open cycle (if any) and begin a new one now."""
    return replace_step(tx, name, state.operator_start)


def cancel(tx: Tx, name: str, options: ProviderOptions) -> Doorbell:
    """Cancel the open cycle without sweeping; the provider rests."""
    return replace_step(tx, name, lambda s, now: state.operator_cancel(s, now, options))


def reset(tx: Tx, name: str) -> Doorbell:
    """Forget the provider's ingestion records; it begins afresh now. Entities stay."""
    t.lock_provider(tx, name)
    cycle_ids = select(m.cycles.c.id).where(m.cycles.c.provider == name)
    tx.conn.execute(delete(m.checkpoints).where(m.checkpoints.c.cycle_id.in_(cycle_ids)))
    tx.conn.execute(delete(m.cycles).where(m.cycles.c.provider == name))
    tx.conn.execute(delete(m.bursts).where(m.bursts.c.provider == name))
    tx.conn.execute(delete(m.errors).where(m.errors.c.provider == name))
    return t.apply(
        tx,
        name,
        state.reset(tx.now),
        None,
        last_error=None,
        last_error_at=None,
        blocked_cycle_id=None,
        blocked_reason=None,
        blocked_count=0,
    )


def delete_closed_checkpoints(tx: Tx, name: str | None) -> int:
    """Delete the checkpoints of closed cycles (history; the catalog keeps its marks)."""
    closed = select(m.cycles.c.id).where(m.cycles.c.status != CycleStatus.RUNNING.value)
    if name is not None:
        closed = closed.where(m.cycles.c.provider == name)
    result = tx.conn.execute(delete(m.checkpoints).where(m.checkpoints.c.cycle_id.in_(closed)))
    return int(result.rowcount)


def delete_entities(tx: Tx, provider: str) -> int:
    """Remove every entity ``provider`` owns, at once (no sweep guard applies)."""
    # The provider's row lock orders this against its page commits and events.
    t.lock_provider(tx, provider)
    scope = m.entities.c.provider == provider
    return tx.feed.remove_where(tx, scope, provider, ChangeSource.OPERATOR)
