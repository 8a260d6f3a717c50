"""Reads for the operator surfaces: a provider's status and history, and the catalog.

Each function runs on a connection of a reading transaction the
:class:`~ingestion.store.Store` opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from ingestion import state
from ingestion.errors import UnknownProvider
from ingestion.state import Action, CycleStatus
from ingestion.store import models as m
from ingestion.store.records import ErrorKind, ProviderStatus
from ingestion.store.sweep import held_bound, removal_threshold


def _rows(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _first(conn: Connection, stmt: Any) -> dict[str, Any] | None:
    rows = _rows(conn, stmt.limit(1))
    return rows[0] if rows else None


def _entities() -> Any:
    """Catalog rows with their bodies, as one row each (the body is in a table of its own)."""
    return select(*m.entities.c, m.bodies.c.entity).select_from(m.entities_with_bodies)


def provider_names(conn: Connection) -> list[str]:
    return list(conn.scalars(select(m.providers.c.name).order_by(m.providers.c.name)))


def _provider(conn: Connection, name: str) -> Any:
    row = conn.execute(select(m.providers).where(m.providers.c.name == name)).first()
    if row is None:
        raise UnknownProvider(f"no provider named {name!r} in the database")
    return row


def _last_completed(conn: Connection, name: str) -> int | None:
    c = m.cycles.c
    last = conn.execute(
        select(func.max(c.id)).where(c.provider == name, c.status == CycleStatus.COMPLETED.value)
    ).scalar()
    return int(last) if last is not None else None


def _waiting_scope(conn: Connection, name: str, missed_cycles: int) -> Any | None:
    """Entities the last completed cycle missed that ``remove_after_missed_cycles`` keeps."""
    last = _last_completed(conn, name)
    if last is None or missed_cycles <= 1:
        return None
    e = m.entities.c
    threshold = removal_threshold(conn, name, last, missed_cycles)
    return and_(e.provider == name, e.mark_cycle < last, e.mark_cycle >= threshold)


def status(conn: Connection, name: str, now: datetime, *, missed_cycles: int = 1) -> ProviderStatus:
    """Where a provider stands: its step, lease, last error, cycles and held-back removals."""
    row = _provider(conn, name)
    c = m.cycles.c
    current = None
    if row.cycle_id is not None:
        current = _first(
            conn,
            select(m.cycles).where(c.id == row.cycle_id, c.status == CycleStatus.RUNNING.value),
        )
    last = _first(
        conn,
        select(m.cycles)
        .where(c.provider == name, c.status == CycleStatus.COMPLETED.value)
        .order_by(c.id.desc()),
    )
    blocked = None
    if row.blocked_reason:
        blocked = {
            "reason": row.blocked_reason,
            "count": row.blocked_count,
            "since_cycle": row.blocked_cycle_id,
        }
    waiting = 0
    scope = _waiting_scope(conn, name, missed_cycles)
    if scope is not None:
        waiting = int(
            conn.execute(select(func.count()).select_from(m.entities).where(scope)).scalar_one()
        )
    running = state.lease_held(row.lease_owner, row.lease_expires_at, now)
    return ProviderStatus(
        name=name,
        action=Action(row.action),
        due_at=row.due_at,
        attempts=row.attempts,
        ticket=row.ticket,
        running=running,
        lease_owner=row.lease_owner,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        current_cycle=current,
        last_completed_cycle=last,
        blocked_sweep=blocked,
        waiting_removals=waiting,
    )


def cycles(conn: Connection, name: str, limit: int) -> list[dict[str, Any]]:
    """The provider's cycles, newest first."""
    c = m.cycles.c
    return _rows(
        conn, select(m.cycles).where(c.provider == name).order_by(c.id.desc()).limit(limit)
    )


def cycle(conn: Connection, name: str, cycle_id: int) -> dict[str, Any] | None:
    """One cycle of the provider, or ``None``."""
    c = m.cycles.c
    return _first(conn, select(m.cycles).where(c.provider == name, c.id == cycle_id))


def checkpoints(
    conn: Connection, name: str, limit: int, cycle_id: int | None
) -> list[dict[str, Any]]:
    """The checkpoints (one per committed page) of the provider's cycles, newest first."""
    k = m.checkpoints.c
    stmt = (
        select(m.checkpoints)
        .join(m.cycles, m.cycles.c.id == k.cycle_id)
        .where(m.cycles.c.provider == name)
        .order_by(k.id.desc())
        .limit(limit)
    )
    if cycle_id is not None:
        stmt = stmt.where(k.cycle_id == cycle_id)
    return _rows(conn, stmt)


def bursts(conn: Connection, name: str, limit: int) -> list[dict[str, Any]]:
    """The provider's bursts, newest first."""
    b = m.bursts.c
    return _rows(
        conn, select(m.bursts).where(b.provider == name).order_by(b.id.desc()).limit(limit)
    )


def errors(
    conn: Connection,
    name: str,
    *,
    limit: int,
    before: int | None,
    kinds: Sequence[ErrorKind] | None,
    rule: str | None = None,
) -> list[dict[str, Any]]:
    """Error records, newest first; page with ``before`` = the last id seen."""
    stmt = select(m.errors).where(m.errors.c.provider == name)
    if rule is not None:
        stmt = stmt.where(m.errors.c.rule == rule)
    if before is not None:
        stmt = stmt.where(m.errors.c.id < before)
    if kinds:
        stmt = stmt.where(m.errors.c.kind.in_([k.value for k in kinds]))
    return _rows(conn, stmt.order_by(m.errors.c.id.desc()).limit(limit))


def error_rules(conn: Connection, name: str) -> dict[str, int]:
    """The rules the provider's error records name, with how many records name each."""
    e = m.errors.c
    stmt = (
        select(e.rule, func.count())
        .where(e.provider == name, e.rule.is_not(None))
        .group_by(e.rule)
        .order_by(e.rule)
    )
    return {rule: int(count) for rule, count in conn.execute(stmt)}


def entity(conn: Connection, ref: str) -> dict[str, Any] | None:
    """The catalog row of ``ref`` (any case), or ``None``."""
    return _first(conn, _entities().where(m.entities.c.ref == ref.lower()))


def entities_page(
    conn: Connection,
    *,
    provider: str | None,
    kind: str | None,
    after: str | None,
    limit: int,
    contains: str | None = None,
) -> list[dict[str, Any]]:
    """Entities in ref order, ``limit`` at a time after the ref ``after`` (keyset).

    ``contains`` keeps the refs that hold that fragment (a name, a namespace, part of either).
    """
    e = m.entities.c
    stmt = _entities().order_by(e.ref).limit(limit)
    if contains:
        stmt = stmt.where(e.ref.contains(contains.lower(), autoescape=True))
    if provider is not None:
        stmt = stmt.where(e.provider == provider)
    if kind is not None:
        stmt = stmt.where(e.ref.startswith(f"{kind.lower()}:", autoescape=True))
    if after is not None:
        stmt = stmt.where(e.ref > after)
    return _rows(conn, stmt)


def count_entities(conn: Connection, provider: str | None) -> int:
    stmt = select(func.count()).select_from(m.entities)
    if provider is not None:
        stmt = stmt.where(m.entities.c.provider == provider)
    return int(conn.execute(stmt).scalar_one())


def held_removals(
    conn: Connection, name: str, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """The entities a guard holds back from removal, in ref order after ``after``."""
    bound = held_bound(conn, _provider(conn, name))
    if bound is None:
        return []
    e = m.entities.c
    stmt = _entities().where(e.provider == name, e.mark_cycle < bound)
    if after is not None:
        stmt = stmt.where(e.ref > after)
    return _rows(conn, stmt.order_by(e.ref).limit(limit))


def waiting_removals(
    conn: Connection, name: str, missed_cycles: int, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Entities missing from the last completed cycle that ``remove_after_missed_cycles``
    keeps for now, in ref order after ``after``."""
    _provider(conn, name)
    scope = _waiting_scope(conn, name, missed_cycles)
    if scope is None:
        return []
    e = m.entities.c
    stmt = _entities().where(scope)
    if after is not None:
        stmt = stmt.where(e.ref > after)
    return _rows(conn, stmt.order_by(e.ref).limit(limit))
