"""Writing what :mod:`ingestion.state` decides: the provider row, its cycles, its lease.

The functions here run inside a transaction the caller opened (see :class:`Tx`); none decides
anything on its own: the next schedule always comes from a pure function of ``state``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update

from ingestion import state
from ingestion.errors import LeaseLost, UnknownProvider
from ingestion.options import ProviderOptions
from ingestion.state import BurstOutcome, CycleStatus, Phase, Schedule, Transition
from ingestion.store import models as m
from ingestion.store.database import Tx
from ingestion.store.records import Claim, Doorbell, ErrorKind, Problem

log = logging.getLogger("ingestion.store")


def lock_provider(tx: Tx, name: str, *, lock: bool = True) -> Row[Any]:
    """The provider's row, locked until the transaction ends (Postgres; SQLite's write
    transactions hold the whole database already)."""
    stmt = select(m.providers).where(m.providers.c.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = tx.conn.execute(stmt).first()
    if row is None:
        raise UnknownProvider(f"no provider named {name!r} in the database")
    return row


def schedule_of(row: Any) -> Schedule:
    """The schedule a provider row holds."""
    return Schedule(state.Action(row.action), row.due_at, row.attempts)


def next_burst_number(tx: Tx, cycle_id: int) -> int:
    """The number the next burst of ``cycle_id`` gets (bursts so far + 1)."""
    bursts = tx.conn.execute(select(m.cycles.c.bursts).where(m.cycles.c.id == cycle_id)).scalar()
    return (bursts or 0) + 1


def doorbell_of(tx: Tx, row: Any) -> Doorbell:
    """The step a provider row holds, to announce it again."""
    in_cycle = schedule_of(row).cycle_open and row.cycle_id is not None
    bursts = next_burst_number(tx, row.cycle_id) - 1 if in_cycle else 0
    return doorbell_from(row, tx.now, bursts=bursts)


def doorbell_from(row: Any, now: datetime, *, bursts: int | None = None) -> Doorbell:
    """The step a provider row holds, read together with its cycle's ``bursts`` (or given)."""
    schedule = schedule_of(row)
    in_cycle = schedule.cycle_open and row.cycle_id is not None
    done = (row.bursts if bursts is None else bursts) or 0
    return Doorbell(
        provider=row.name,
        ticket=row.ticket,
        action=schedule.action,
        cycle_id=row.cycle_id if in_cycle else None,
        burst=done + 1 if in_cycle else 1,
        countdown=max(0.0, (row.due_at - now).total_seconds()),
    )


def open_cycle(tx: Tx, name: str) -> int:
    cycle_id = tx.conn.execute(
        insert(m.cycles)
        # The counters start at their column defaults (0).
        .values(
            provider=name,
            status=CycleStatus.RUNNING.value,
            started_at=tx.now,
            events_at_start=select(m.providers.c.last_event_id)
            .where(m.providers.c.name == name)
            .scalar_subquery(),
        )
        .returning(m.cycles.c.id)
    ).scalar_one()
    assert isinstance(cycle_id, int)
    return cycle_id


def close_cycle(tx: Tx, cycle_id: int | None, status: CycleStatus) -> None:
    if cycle_id is None:
        return
    tx.conn.execute(
        update(m.cycles)
        .where(m.cycles.c.id == cycle_id, m.cycles.c.status == CycleStatus.RUNNING.value)
        .values(status=status.value, ended_at=tx.now)
    )


def apply(
    tx: Tx, name: str, transition: Transition, cycle_id: int | None, **values: Any
) -> Doorbell:
    """Make ``transition`` the provider's next step: close/open the cycle, bump the ticket (so
    every message sent for an earlier step becomes stale) and release any lease."""
    if transition.close_cycle is not None:
        close_cycle(tx, cycle_id, transition.close_cycle)
    if transition.open_cycle:
        cycle_id = open_cycle(tx, name)
    sched = transition.schedule
    in_cycle = sched.cycle_open and cycle_id is not None
    burst = 1  # a new cycle's first burst, or the first of the cycle a rest will open
    if in_cycle and cycle_id is not None and not transition.open_cycle:
        burst = next_burst_number(tx, cycle_id)
    if transition.open_cycle:
        # The status shows the last error of the open cycle; older ones are in the history.
        values = {"last_error": None, "last_error_at": None, **values}
    ticket = tx.conn.execute(
        update(m.providers)
        .where(m.providers.c.name == name)
        .values(
            action=sched.action.value,
            due_at=sched.due_at,
            attempts=sched.attempts,
            cycle_id=cycle_id,
            ticket=m.providers.c.ticket + 1,
            lease_owner=None,
            lease_expires_at=None,
            sent_at=tx.now,
            updated_at=tx.now,
            **values,
        )
        .returning(m.providers.c.ticket)
    ).scalar_one()
    return Doorbell(
        provider=name,
        ticket=ticket,
        action=sched.action,
        cycle_id=cycle_id if in_cycle else None,
        burst=burst,
        countdown=max(0.0, (sched.due_at - tx.now).total_seconds()),
    )


def hold_lease(tx: Tx, claim: Claim, lease: timedelta) -> None:
    """The guard of every write a burst makes: this worker must still hold this step, and its
    lease must not have run out (a worker frozen past its lease commits nothing, even before
    another takes the step over).

    Renews the lease; raises :class:`LeaseLost` when the step was replaced or the lease ran out.
    """
    if not renew_lease(tx, claim, lease):
        raise LeaseLost(
            f"provider {claim.provider!r}: ticket {claim.ticket} is no longer held by "
            f"{claim.owner} (its lease ran out, or an operator or a recovery replaced the step)"
        )


def renew_lease(tx: Tx, claim: Claim, lease: timedelta) -> bool:
    """Extend the lease of a claim that still holds its step; whether it did."""
    result = tx.conn.execute(
        _RENEW,
        {
            "held_name": claim.provider,
            "held_ticket": claim.ticket,
            "held_owner": claim.owner,
            "held_now": tx.now,
            "until": tx.now + lease,
        },
    )
    return bool(result.rowcount == 1)


# Renewed with every page a burst commits: built once (see pages._CYCLE_COUNTS).
_RENEW = (
    update(m.providers)
    .where(
        m.providers.c.name == bindparam("held_name"),
        m.providers.c.ticket == bindparam("held_ticket"),
        m.providers.c.lease_owner == bindparam("held_owner"),
        m.providers.c.lease_expires_at >= bindparam("held_now"),
    )
    .values(lease_expires_at=bindparam("until", type_=m.providers.c.lease_expires_at.type))
)


def end_burst(tx: Tx, burst_id: int, outcome: BurstOutcome, **values: Any) -> None:
    """Close a burst's row with its outcome: the one way a burst row ends."""
    tx.conn.execute(
        update(m.bursts)
        .where(m.bursts.c.id == burst_id)
        .values(outcome=outcome.value, ended_at=tx.now, **values)
    )


def end_burst_of_ticket(
    tx: Tx, name: str, ticket: int, outcome: BurstOutcome, **values: Any
) -> None:
    """Close the burst row a ticket's claim opened (its worker is gone or was replaced)."""
    tx.conn.execute(
        update(m.bursts)
        .where(m.bursts.c.provider == name, m.bursts.c.ticket == ticket)
        .values(outcome=outcome.value, ended_at=tx.now, **values)
    )


def record_error(
    tx: Tx,
    row: Any,
    message: str,
    *,
    page: int | None = None,
    problems: Sequence[Problem] = (),
) -> None:
    """An error record of the step's failure (with the page it was on), and the rejected
    entities of that page, which would otherwise be lost with the page."""
    records = [
        {
            "provider": row.name,
            "cycle_id": row.cycle_id,
            "page": page,
            "kind": ErrorKind.ENTITY.value,
            "entity": p.entity,
            "ref": p.ref,
            "rule": p.rule,
            "message": p.message,
            "created_at": tx.now,
        }
        for p in problems
    ]
    records.append(
        {
            "provider": row.name,
            "cycle_id": row.cycle_id,
            "page": page,
            "kind": ErrorKind.BURST.value,
            "entity": None,
            "ref": None,
            "rule": None,
            "message": message,
            "created_at": tx.now,
        }
    )
    tx.conn.execute(insert(m.errors), records)


def record_failure(
    tx: Tx,
    row: Any,
    message: str,
    options: ProviderOptions,
    *,
    progressed: bool = False,
    lost: bool = False,
    page: int | None = None,
    problems: Sequence[Problem] = (),
) -> Doorbell:
    """Record a failed step (an error record and the last error) and apply the backoff."""
    record_error(tx, row, message, page=page, problems=problems)
    schedule = schedule_of(row)
    if lost:
        transition = state.after_lost_burst(schedule, tx.now, options, progressed=progressed)
    else:
        transition = state.after_failure(schedule, tx.now, options, progressed=progressed)
    if transition.close_cycle is CycleStatus.CANCELLED:
        log.warning(
            "provider %s: the last backoff step failed; cycle %s cancelled, starting over",
            row.name,
            row.cycle_id,
        )
    return apply(tx, row.name, transition, row.cycle_id, last_error=message, last_error_at=tx.now)


def page_in_flight(tx: Tx, cycle_id: int | None) -> int | None:
    """The page a lost burst of ``cycle_id`` was on: the one after the cycle's last committed
    page (every commit holds the lease, so none lands once it ran out). ``None`` in the
    checking phase, which reads no pages."""
    c = m.cycles.c
    row = tx.conn.execute(select(c.pages, c.phase).where(c.id == cycle_id)).first()
    if row is None or row.phase != Phase.INGEST.value:
        return None
    return int(row.pages) + 1


def burst_progressed(
    tx: Tx, burst_id: int | None = None, *, name: str = "", ticket: int = 0
) -> bool:
    """Whether a burst committed anything: a page, or a batch of removal checks."""
    b = m.bursts.c
    stmt = select(b.pages + b.checked)
    stmt = (
        stmt.where(b.id == burst_id)
        if burst_id is not None
        else stmt.where(b.provider == name, b.ticket == ticket)
    )
    return bool(tx.conn.execute(stmt).scalar() or 0)
