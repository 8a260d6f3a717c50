"""The sweep: remove what this provider owns and the completed cycles did not mark.

Counting and removing are set-based statements over the provider's rows; no ref is held in
Python. What to remove, and what to hold back, is :func:`ingestion.state.decide_sweep`'s call.

An entity's mark is the id of the last cycle that saw it (``catalog_entities.mark_cycle``), and
cycle ids grow, so "missing from the last N completed cycles" is "marked before the N-th most
recent completed cycle": the *threshold*. With ``remove_after_missed_cycles = 1`` (the default)
the threshold is the cycle being completed.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, delete, func, literal, select, update

from ingestion import state
from ingestion.options import ProviderOptions
from ingestion.provider import RemovalCandidate
from ingestion.state import CycleStatus
from ingestion.store import models as m
from ingestion.store.changes import ChangeSource
from ingestion.store.database import Tx
from ingestion.store.records import Claim, SweepResult
from ingestion.store.transitions import lock_provider

log = logging.getLogger("ingestion.store")


def removal_threshold(conn: Connection, provider: str, cycle: int, missed_cycles: int) -> int:
    """The cycle an entity must be marked before to be removed when ``cycle`` completes: the
    ``missed_cycles``-th most recent completed cycle, ``cycle`` counted as the first."""
    if missed_cycles <= 1:
        return cycle
    c = m.cycles.c
    earlier = conn.execute(
        select(c.id)
        .where(c.provider == provider, c.status == CycleStatus.COMPLETED.value, c.id < cycle)
        .order_by(c.id.desc())
        .offset(missed_cycles - 2)
        .limit(1)
    ).scalar()
    # Fewer completed cycles than that: nothing has been missing long enough.
    return int(earlier) if earlier is not None else 0


def removal_candidates(
    conn: Connection, claim: Claim, options: ProviderOptions, *, after: str | None, limit: int
) -> list[RemovalCandidate]:
    """The next ``limit`` entities, in ref order after ``after``, that the sweep at the end of
    ``claim``'s cycle would remove: what a provider's removal checks are asked about."""
    e = m.entities.c
    threshold = removal_threshold(
        conn, claim.provider, claim.cycle_id, options.remove_after_missed_cycles
    )
    stmt = (
        select(e.ref, m.bodies.c.entity, e.location_key)
        .select_from(m.entities_with_bodies)
        .where(e.provider == claim.provider, e.mark_cycle < threshold)
        .order_by(e.ref)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(e.ref > after)
    return [RemovalCandidate(r.ref, r.entity, r.location_key) for r in conn.execute(stmt)]


def _sum(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def sweep_unmarked(tx: Tx, claim: Claim, options: ProviderOptions) -> SweepResult:
    """Sweep after the last page of ``claim``'s cycle, inside its closing transaction."""
    e = m.entities.c
    row = lock_provider(tx, claim.provider)
    cycle = claim.cycle_id
    threshold = removal_threshold(
        tx.conn, claim.provider, cycle, options.remove_after_missed_cycles
    )
    blocked_cycle = row.blocked_cycle_id
    counts = tx.conn.execute(
        select(
            func.count(),
            _sum(e.mark_cycle == cycle),
            _sum(e.mark_cycle < threshold),
            _sum(e.mark_cycle < blocked_cycle) if blocked_cycle is not None else literal(0),
        ).where(e.provider == claim.provider)
    ).one()
    owned, marked, eligible, confirmed = (int(v) for v in counts)
    decision = state.decide_sweep(
        owned=owned,
        marked=marked,
        fresh=eligible - confirmed,
        confirmed=confirmed,
        options=options,
        cycle=threshold,
        blocked_cycle=blocked_cycle,
    )
    mine = e.provider == claim.provider
    scope: ColumnElement[bool] | None = None
    if decision.remove_fresh and decision.remove_confirmed:
        scope = and_(mine, e.mark_cycle < threshold)
    elif decision.remove_confirmed and blocked_cycle is not None:
        scope = and_(mine, e.mark_cycle < blocked_cycle)
    elif decision.remove_fresh:
        scope = and_(mine, e.mark_cycle < threshold)
        if blocked_cycle is not None and confirmed:  # held ones stay until approved
            scope = and_(scope, e.mark_cycle >= blocked_cycle)
    removed = 0
    if scope is not None:
        removed = tx.feed.remove_where(
            tx, scope, claim.provider, ChangeSource.SWEEP, cycle_id=cycle
        )
    _forget_touches(tx, claim.provider, cycle)
    blocked = eligible - removed if decision.blocked_reason else 0
    tx.conn.execute(
        update(m.providers)
        .where(m.providers.c.name == claim.provider)
        .values(
            blocked_cycle_id=decision.blocked_cycle,
            blocked_reason=decision.blocked_reason,
            blocked_count=blocked,
        )
    )
    tx.conn.execute(
        update(m.cycles)
        .where(m.cycles.c.id == cycle)
        .values(removed=removed, blocked=blocked, blocked_reason=decision.blocked_reason)
    )
    if decision.blocked_reason:
        log.warning("provider %s: sweep held back: %s", claim.provider, decision.blocked_reason)
    return SweepResult(removed, blocked, decision.blocked_reason)


def _forget_touches(tx: Tx, provider: str, cycle: int) -> None:
    """Every page of the next cycle is read after the events the completed one began with:
    what those events did can no longer be undone by a page, and need not be remembered."""
    t = m.event_touches.c
    began = select(m.cycles.c.events_at_start).where(m.cycles.c.id == cycle).scalar_subquery()
    tx.conn.execute(delete(m.event_touches).where(t.provider == provider, t.event_id <= began))


def held_bound(conn: Connection, row: Any) -> int | None:
    """The cycle held-back removals are measured against: entities marked before it are held.

    A block recorded by an empty cycle has none of its own (an empty cycle is no evidence); an
    operator approving it then removes what the cycle that held it back did not see.
    """
    if not row.blocked_reason:
        return None
    if row.blocked_cycle_id is not None:
        return int(row.blocked_cycle_id)
    c = m.cycles.c
    last = conn.execute(
        select(c.id)
        .where(c.provider == row.name, c.status == CycleStatus.COMPLETED.value)
        .order_by(c.id.desc())
        .limit(1)
    ).scalar()
    return int(last) if last is not None else None


def approve_held(tx: Tx, name: str) -> int:
    """An operator approves the held-back removals: they go now, and the block is cleared."""
    row = lock_provider(tx, name)
    bound = held_bound(tx.conn, row)
    removed = 0
    if bound is not None:
        e = m.entities.c
        scope = and_(e.provider == name, e.mark_cycle < bound)
        removed = tx.feed.remove_where(tx, scope, name, ChangeSource.OPERATOR)
    _clear_block(tx, name)
    log.warning("provider %s: an operator approved %d held-back removal(s)", name, removed)
    return removed


def dismiss_held(tx: Tx, name: str) -> int:
    """An operator dismisses the held-back removals: the entities stay, counted as seen by the
    last completed cycle, and the block is cleared."""
    row = lock_provider(tx, name)
    bound = held_bound(tx.conn, row)
    kept = 0
    if bound is not None:
        e = m.entities.c
        c = m.cycles.c
        last = tx.conn.execute(
            select(func.max(c.id)).where(
                c.provider == name, c.status == CycleStatus.COMPLETED.value
            )
        ).scalar()
        kept = int(
            tx.conn.execute(
                update(m.entities)
                .where(e.provider == name, e.mark_cycle < bound)
                .values(mark_cycle=last if last is not None else bound)
            ).rowcount
        )
    _clear_block(tx, name)
    log.warning("provider %s: an operator kept %d held-back removal(s)", name, kept)
    return kept


def _clear_block(tx: Tx, name: str) -> None:
    tx.conn.execute(
        update(m.providers)
        .where(m.providers.c.name == name)
        .values(blocked_cycle_id=None, blocked_reason=None, blocked_count=0, updated_at=tx.now)
    )
