"""The sweep: remove what this provider owns and the completed cycle did not mark.

Counting and removing are set-based statements over the provider's rows; no ref is held in
Python. What to remove, and what to hold back, is :func:`ingestion.state.decide_sweep`'s call.
"""

from __future__ import annotations

import logging

from sqlalchemy import case, delete, func, literal, select, update

from ingestion import state
from ingestion.options import ProviderOptions
from ingestion.store import models as m
from ingestion.store.database import Tx
from ingestion.store.records import Claim, SweepResult
from ingestion.store.transitions import lock_provider

log = logging.getLogger("ingestion.store")


def sweep_unmarked(tx: Tx, claim: Claim, options: ProviderOptions) -> SweepResult:
    """Sweep after the last page of ``claim``'s cycle, inside its closing transaction."""
    e = m.entities.c
    row = lock_provider(tx, claim.provider)
    cycle = claim.cycle_id
    blocked_cycle = row.blocked_cycle_id
    confirmed_expr = (
        func.coalesce(func.sum(case((e.mark_cycle < blocked_cycle, 1), else_=0)), 0)
        if blocked_cycle is not None
        else literal(0)
    )
    counts = tx.conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((e.mark_cycle == cycle, 1), else_=0)), 0),
            confirmed_expr,
        ).where(e.provider == claim.provider)
    ).one()
    owned, marked, confirmed = (int(v) for v in counts)
    decision = state.decide_sweep(
        owned=owned,
        marked=marked,
        fresh=owned - marked - confirmed,
        confirmed=confirmed,
        options=options,
        cycle=cycle,
        blocked_cycle=blocked_cycle,
    )
    removed = 0
    if decision.remove_fresh:
        removed = tx.conn.execute(
            delete(m.entities).where(e.provider == claim.provider, e.mark_cycle < cycle)
        ).rowcount
    elif decision.remove_confirmed and blocked_cycle is not None:
        removed = tx.conn.execute(
            delete(m.entities).where(e.provider == claim.provider, e.mark_cycle < blocked_cycle)
        ).rowcount
    blocked = (owned - marked) - removed if decision.blocked_reason else 0
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
