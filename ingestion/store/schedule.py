"""Schedule and claims: which step is due, who holds it, and how a burst ends.

Each function runs in a transaction the :class:`~ingestion.store.Store` opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Row,
    false,
    func,
    insert,
    select,
    update,
)

from ingestion import state
from ingestion.errors import UnknownProvider
from ingestion.options import ProviderOptions
from ingestion.state import Action, BurstOutcome, CycleStatus, Phase, Schedule, Transition
from ingestion.store import models as m
from ingestion.store import transitions as t
from ingestion.store.database import Database, Tx
from ingestion.store.records import Claim, Doorbell, LostBurst, Problem, Skip, SweepResult
from ingestion.store.sweep import sweep_unmarked

log = logging.getLogger("ingestion.store")


def ensure_providers(db: Database, tx: Tx, names: Iterable[str]) -> list[str]:
    """Give every provider a row; a new one is due to begin a cycle now. The names created."""
    wanted = list(names)
    if not wanted:
        return []
    stmt = (
        db.insert(m.providers)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(m.providers.c.name)
    )
    rows = [
        {
            "name": name,
            "action": Action.REST.value,
            "due_at": tx.now,
            "attempts": 0,
            "ticket": 1,
            "blocked_count": 0,
            "created_at": tx.now,
            "updated_at": tx.now,
        }
        for name in wanted
    ]
    created = [row.name for row in tx.conn.execute(stmt, rows)]
    for name in created:
        log.info("provider %s registered; its first cycle is due now", name)
    return created


def due_steps(
    tx: Tx,
    names: Collection[str],
    *,
    resend_after: timedelta,
    limit: int,
    registered: bool = False,
    queued: int = 0,
    lease: timedelta | None = None,
) -> list[Doorbell]:
    """Steps of ``names`` that are due, held by no live lease, and not announced in
    ``resend_after``; the least recently announced first, ``limit`` at most.

    Every transition counts as an announcement (its caller sends the task), so a step whose
    message was lost is announced again ``resend_after`` after it was recorded or due.
    ``registered`` says every name has a row already: when the table holds no other provider,
    the names are not sent at all. ``queued`` is how many messages wait in the burst queue:
    as it is first in, first out, the ``queued`` most recently announced steps may still be
    waiting there, and are not announced again (a step announced before them was lost).
    One statement reads the steps with their burst numbers, one
    more records the announcement; on Postgres, rows another transaction holds (a claim, a
    second reconciler) are skipped, not waited for.

    ``lease``: a lease that ran out while the database was down is not taken for a dead worker
    until the database has been up for a lease (Postgres): the burst's own worker records how
    it ended, and why, as soon as it can reach the database again.
    """
    if limit <= 0:
        return []
    p = m.providers.c
    c = m.cycles.c
    waiting = [p.due_at <= tx.now, p.action != Action.PARKED.value]
    expired = p.lease_expires_at < tx.now
    if lease is not None:
        expired = expired & tx.sql.up_since(tx.now - lease)
    waiting.append((p.lease_owner.is_(None)) | expired)
    wanted = list(names)
    if not (registered and _provider_count(tx) == len(wanted)):
        waiting.append(tx.sql.name_in(p.name, wanted))
    again = p.sent_at <= tx.now - resend_after
    if queued > 0:
        # The sent_at of the queued-th most recent announcement still waiting for its claim.
        cutoff = tx.conn.execute(
            select(p.sent_at)
            .where(*waiting, p.sent_at.is_not(None))
            .order_by(p.sent_at.desc())
            .offset(queued - 1)
            .limit(1)
        ).scalar()
        again = again & (p.sent_at < cutoff) if cutoff is not None else false()
    stmt = (
        select(p.name, p.ticket, p.action, p.cycle_id, p.due_at, p.attempts, c.bursts)
        .select_from(m.providers.outerjoin(m.cycles, c.id == p.cycle_id))
        .where(*waiting)
        .where((p.sent_at.is_(None)) | again)
        .order_by(func.coalesce(p.sent_at, p.due_at), p.due_at)
        .limit(limit)
        .with_for_update(of=m.providers, skip_locked=True)
    )
    rows = tx.conn.execute(stmt).all()
    if rows:
        tx.conn.execute(
            update(m.providers)
            .where(tx.sql.name_in(p.name, [r.name for r in rows]))
            .values(sent_at=tx.now)
        )
    return [t.doorbell_from(row, tx.now) for row in rows]


def _provider_count(tx: Tx) -> int:
    return int(tx.conn.execute(select(func.count()).select_from(m.providers)).scalar_one())


def claim(
    tx: Tx, name: str, ticket: int, owner: str, lease: timedelta, options: ProviderOptions
) -> Claim | Skip | LostBurst:
    """Take the provider for one burst, if the message's step is still the pending one."""
    try:
        row = t.lock_provider(tx, name)
    except UnknownProvider as exc:
        return Skip(str(exc))
    if row.ticket != ticket:
        return Skip(f"stale message: ticket {ticket}, the pending step is {row.ticket}")
    if row.action == Action.PARKED.value:
        return Skip("the provider is parked until an operator starts it")
    if state.lease_held(row.lease_owner, row.lease_expires_at, tx.now):
        return Skip(
            f"duplicate message: {row.lease_owner} holds ticket {ticket} "
            f"until {row.lease_expires_at.isoformat()}"
        )
    if row.due_at > tx.now:
        return Skip(f"early message: the step is due at {row.due_at.isoformat()}")
    # A lease that ran out while the database was down tells nothing yet about its worker.
    if row.lease_owner is not None and tx.sql.restarted_within(tx.conn, tx.now, lease):
        return Skip(
            f"the lease of {row.lease_owner} ran out while the database was down; its worker "
            "may still record how the burst ended"
        )
    if row.lease_owner is not None:
        reason = (
            f"burst lost: {row.lease_owner} held provider {name!r} until "
            f"{row.lease_expires_at.isoformat()} and never finished (the worker was "
            "killed or the burst outran its time limit)"
        )
        progressed = t.burst_progressed(tx, name=name, ticket=ticket)
        t.end_burst_of_ticket(tx, name, ticket, BurstOutcome.LOST, error=reason)
        doorbell = t.record_failure(
            tx,
            row,
            reason,
            options,
            progressed=progressed,
            lost=True,
            page=t.page_in_flight(tx, row.cycle_id),
        )
        return LostBurst(reason, doorbell)
    transition = state.claim_step(t.schedule_of(row), tx.now, has_cycle=row.cycle_id is not None)
    cycle_id = t.open_cycle(tx, name) if transition.open_cycle else row.cycle_id
    cycle = tx.conn.execute(select(m.cycles).where(m.cycles.c.id == cycle_id)).one()
    number = cycle.bursts + 1
    burst_id = tx.conn.execute(
        insert(m.bursts)
        .values(
            provider=name,
            cycle_id=cycle_id,
            number=number,
            ticket=ticket,
            worker=owner,
            outcome=BurstOutcome.RUNNING.value,
            started_at=tx.now,
        )
        .returning(m.bursts.c.id)
    ).scalar_one()
    tx.conn.execute(update(m.cycles).where(m.cycles.c.id == cycle_id).values(bursts=number))
    schedule = transition.schedule
    tx.conn.execute(
        update(m.providers)
        .where(m.providers.c.name == name, m.providers.c.ticket == ticket)
        .values(
            action=schedule.action.value,
            due_at=schedule.due_at,
            attempts=schedule.attempts,
            cycle_id=cycle_id,
            lease_owner=owner,
            lease_expires_at=tx.now + lease,
            updated_at=tx.now,
        )
    )
    return Claim(
        provider=name,
        ticket=ticket,
        owner=owner,
        cycle_id=cycle_id,
        burst_id=burst_id,
        burst=number,
        schedule=schedule,
        cursor=cycle.cursor,
        next_sequence=cycle.pages + 1,
        phase=Phase(cycle.phase),
        check_after=cycle.check_after,
    )


def finish_burst(
    tx: Tx,
    claim: Claim,
    *,
    done: bool,
    lease: timedelta,
    options: ProviderOptions,
    checks_removals: bool = False,
) -> tuple[Doorbell, SweepResult | None]:
    """Close the burst: schedule the next one; or, the source read to its end, begin the
    checking phase (a provider that checks removals) or sweep, complete the cycle and rest."""
    t.hold_lease(tx, claim, lease)
    if claim.phase is Phase.CHECK:
        sweep = sweep_unmarked(tx, claim, options) if done else None
        transition = state.after_check_burst(done, tx.now, options)
    elif done and checks_removals:
        tx.conn.execute(
            update(m.cycles)
            .where(m.cycles.c.id == claim.cycle_id)
            .values(phase=Phase.CHECK.value, check_after=None)
        )
        sweep = None
        transition = state.after_burst(True, tx.now, options, check_next=True)
    else:
        sweep = sweep_unmarked(tx, claim, options) if done else None
        transition = state.after_burst(done, tx.now, options)
    completed = transition.close_cycle is CycleStatus.COMPLETED
    t.end_burst(
        tx,
        claim.burst_id,
        BurstOutcome.DONE if completed else BurstOutcome.CONTINUED,
        removed=sweep.removed if sweep else 0,
    )
    return t.apply(tx, claim.provider, transition, claim.cycle_id), sweep


def _still_held(tx: Tx, claim: Claim) -> Row[Any] | None:
    """The provider row, if this claim still holds its step (its lease may have run out
    while the database was away: nobody else has taken the step as long as the ticket holds)."""
    row = t.lock_provider(tx, claim.provider)
    if row.ticket != claim.ticket or row.lease_owner != claim.owner:
        return None
    return row


def fail_burst(
    tx: Tx,
    claim: Claim,
    message: str,
    options: ProviderOptions,
    *,
    page: int | None = None,
    problems: Sequence[Problem] = (),
) -> Doorbell | None:
    """Record a failed burst (with the page it failed on and that page's rejected entities)
    and schedule the backoff; ``None`` if the step was replaced."""
    row = _still_held(tx, claim)
    if row is None:
        return None
    progressed = t.burst_progressed(tx, claim.burst_id)
    t.end_burst(tx, claim.burst_id, BurstOutcome.FAILED, error=message)
    return t.record_failure(
        tx, row, message, options, progressed=progressed, page=page, problems=problems
    )


def database_failure(
    tx: Tx, claim: Claim, message: str, retry_in: timedelta, *, page: int | None = None
) -> Doorbell | None:
    """Record, now that it answers again, that the database failed under the burst; its step
    runs again after ``retry_in``, no attempt counted. ``None`` if the step was replaced."""
    return _end_failed(
        tx,
        claim,
        message,
        page,
        lambda schedule: state.after_database_failure(schedule, tx.now, retry_in),
    )


def park_burst(tx: Tx, claim: Claim, message: str, *, page: int | None = None) -> Doorbell | None:
    """The source refused for good: record why and park the provider until an operator
    starts it. ``None`` if the step was replaced."""
    doorbell = _end_failed(tx, claim, message, page, lambda _: state.park(tx.now))
    if doorbell is not None:
        log.error("provider %s parked until an operator starts it: %s", claim.provider, message)
    return doorbell


def _end_failed(
    tx: Tx,
    claim: Claim,
    message: str,
    page: int | None,
    decide: Callable[[Schedule], Transition],
) -> Doorbell | None:
    """End a failed burst with an error record and the transition ``decide`` gives for the
    provider's schedule, the message as its last error; ``None`` if the step was replaced."""
    row = _still_held(tx, claim)
    if row is None:
        return None
    t.end_burst(tx, claim.burst_id, BurstOutcome.FAILED, error=message)
    t.record_error(tx, row, message, page=page)
    transition = decide(t.schedule_of(row))
    return t.apply(
        tx, claim.provider, transition, row.cycle_id, last_error=message, last_error_at=tx.now
    )


def wait_burst(tx: Tx, claim: Claim, wait: timedelta, reason: str) -> Doorbell | None:
    """Record a burst the source paused (a rate limit): its step runs again after ``wait``.

    No attempt is counted. ``None`` if the step was replaced meanwhile.
    """
    row = _still_held(tx, claim)
    if row is None:
        return None
    t.end_burst(tx, claim.burst_id, BurstOutcome.WAITING, error=reason)
    transition = state.after_rate_limit(t.schedule_of(row), tx.now, wait)
    return t.apply(tx, claim.provider, transition, row.cycle_id)
