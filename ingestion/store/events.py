"""Events from sources: stored when accepted, applied in order, one transaction each.

An event is stored (unique by delivery id) before it is acknowledged, then applied by whichever
worker holds the applier's lease, in id order: each provider sees its events in the order they
were accepted. Applying one event to a provider writes what its hook returned, marked in the
provider's current cycle, removes the refs it named, and remembers both as *touches*: a page of
that cycle whose read began before the event does not undo them (see
:func:`ingestion.store.pages.commit_page`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from ingestion.errors import LeaseLost
from ingestion.store import changes
from ingestion.store import models as m
from ingestion.store.changes import ChangeSource
from ingestion.store.database import Database, Tx
from ingestion.store.pages import EntityWriter, EventMarking, _record_problems
from ingestion.store.records import Page

# pg_advisory_xact_lock's key for accepting events: "ingestion.events" as a number.
EVENTS_LOCK = 0x696E672E657674


class EventStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"  # the database refused to apply it; kept, not retried


@dataclass(frozen=True)
class Accepted:
    """An event stored, or found stored already under its delivery id (``duplicate``)."""

    id: int
    duplicate: bool


@dataclass(frozen=True)
class StoredEvent:
    id: int
    topic: str
    delivery_id: str
    payload: Any
    headers: dict[str, str]


@dataclass
class ProviderDelta:
    """What one provider's hook made of an event, prepared for writing."""

    page: Page  # entities added or changed (prepared), and those rejected
    removed: Sequence[str] = ()


@dataclass
class Applied:
    """What applying one event did, per provider."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    results: dict[str, str] = field(default_factory=dict)


def accept(
    db: Database,
    tx: Tx,
    *,
    topic: str,
    payload: Any,
    headers: Mapping[str, str],
    delivery_id: str,
) -> Accepted:
    """Store an event unless its delivery id is stored already for its topic.

    On Postgres the ids of events are drawn under a transaction lock, as the change feed's
    are: an event's id is below that of every event accepted after it, so applying them in id
    order applies them in the order they were accepted.
    """
    e = m.events.c
    tx.sql.serialise(tx.conn, EVENTS_LOCK)
    new = tx.conn.execute(
        db.insert(m.events)
        .values(
            topic=topic,
            delivery_id=delivery_id,
            # Encoded here: a payload that is itself a string must stay a JSON string.
            payload=json.dumps(payload),
            headers=dict(headers),
            status=EventStatus.PENDING.value,
            received_at=tx.now,
        )
        .on_conflict_do_nothing(index_elements=["topic", "delivery_id"])
        .returning(e.id)
    ).scalar()
    if new is not None:
        return Accepted(int(new), duplicate=False)
    found = tx.conn.execute(
        select(e.id).where(e.topic == topic, e.delivery_id == delivery_id)
    ).scalar_one()
    return Accepted(int(found), duplicate=True)


def pending(conn: Connection, limit: int) -> list[StoredEvent]:
    """The oldest ``limit`` events not applied yet, in id order."""
    e = m.events.c
    rows = conn.execute(
        select(e.id, e.topic, e.delivery_id, e.payload, e.headers)
        .where(e.status == EventStatus.PENDING.value)
        .order_by(e.id)
        .limit(limit)
    )
    return [StoredEvent(r.id, r.topic, r.delivery_id, r.payload, dict(r.headers)) for r in rows]


def oldest_pending(conn: Connection) -> datetime | None:
    """When the oldest event still waiting was received; ``None`` when none waits."""
    e = m.events.c
    first = select(func.min(e.id)).where(e.status == EventStatus.PENDING.value).scalar_subquery()
    return conn.execute(select(e.received_at).where(e.id == first)).scalar()


def get(conn: Connection, event_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(m.events).where(m.events.c.id == event_id)).first()
    return dict(row._mapping) if row is not None else None


def recent(
    conn: Connection, *, limit: int, before: int | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Stored events, newest first, without their payload; page with ``before`` = the last id."""
    e = m.events.c
    stmt = (
        select(e.id, e.topic, e.delivery_id, e.status, e.result, e.received_at, e.applied_at)
        .order_by(e.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(e.id < before)
    if status is not None:
        stmt = stmt.where(e.status == status)
    return [dict(row._mapping) for row in conn.execute(stmt)]


def last_event_id(conn: Connection, provider: str) -> int:
    """The last event applied to ``provider``'s entities (0: none yet)."""
    p = m.providers.c
    found = conn.execute(select(p.last_event_id).where(p.name == provider)).scalar()
    return int(found or 0)


def _fence(tx: Tx, event_id: int, lease: Lease) -> bool:
    """Renew the applier's lease and take the event, in the applying transaction: ``False``
    when the event is no longer pending (another applier applied it); :class:`LeaseLost` when
    the lease expired (another worker may hold it now), so that two appliers never apply the
    same events at once."""
    lk = m.locks.c
    held = tx.conn.execute(
        update(m.locks)
        .where(lk.name == lease.name, lk.owner == lease.owner, lk.expires_at > tx.now)
        .values(expires_at=tx.now + lease.ttl)
    ).rowcount
    if not held:
        raise LeaseLost(f"the lease {lease.name!r} of {lease.owner} expired")
    e = m.events.c
    taken = tx.conn.execute(
        update(m.events)
        .where(e.id == event_id, e.status == EventStatus.PENDING.value)
        .values(status=EventStatus.APPLIED.value, applied_at=tx.now)
    ).rowcount
    return bool(taken)


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    ttl: timedelta


def apply(
    tx: Tx,
    writer: EntityWriter,
    event: StoredEvent,
    deltas: Mapping[str, ProviderDelta],
    results: Mapping[str, str],
    lease: Lease,
) -> Applied | None:
    """Apply one event: each provider's delta, its changes to the feed, the event applied.

    ``None`` when the event was applied already (by an applier whose lease had expired)."""
    if not _fence(tx, event.id, lease):
        return None
    applied = Applied(results=dict(results))
    for provider, delta in sorted(deltas.items()):
        p = m.providers.c
        # The provider's row lock orders this against the page commits of its burst.
        cycle = tx.conn.execute(
            select(p.cycle_id).where(p.name == provider).with_for_update()
        ).first()
        marking = EventMarking(provider, int(cycle.cycle_id or 0) if cycle is not None else 0)
        writes = writer.write(tx, marking, delta.page.entities, expect_unchanged=False)
        changes.written(
            tx,
            provider,
            ChangeSource.EVENT,
            added=writes.added,
            changed=writes.changed,
            event_id=event.id,
        )
        gone: list[str] = []
        if delta.removed:
            ent = m.entities.c
            scope = and_(ent.provider == provider, ent.ref.in_(list(delta.removed)))
            changes.delete_bodies(tx.conn, scope)
            gone = list(tx.conn.scalars(delete(m.entities).where(scope).returning(ent.ref)))
            changes.removed(tx, provider, ChangeSource.EVENT, gone, event_id=event.id)
        _touch(tx, provider, event.id, [i.ref for i in delta.page.entities], delta.removed)
        problems = [*delta.page.rejected, *writes.conflicts]
        _record_problems(tx, marking, None, problems, delta.page.warnings)
        if cycle is not None:
            tx.conn.execute(
                update(m.providers)
                .where(p.name == provider)
                .values(last_event_id=event.id, updated_at=tx.now)
            )
        applied.added += len(writes.added)
        applied.changed += len(writes.changed)
        applied.removed += len(gone)
        unchanged = writes.unchanged
        applied.results[provider] = (
            f"added {len(writes.added)}, changed {len(writes.changed)}, unchanged {unchanged}, "
            f"removed {len(gone)}" + (f", rejected {len(problems)}" if problems else "")
        )
    tx.conn.execute(
        update(m.events).where(m.events.c.id == event.id).values(result=applied.results)
    )
    return applied


def fail(tx: Tx, event_id: int, reason: str) -> None:
    """Record that the database refused to apply the event; the applier moves on."""
    e = m.events.c
    tx.conn.execute(
        update(m.events)
        .where(e.id == event_id, e.status == EventStatus.PENDING.value)
        .values(
            status=EventStatus.FAILED.value, applied_at=tx.now, result={"*": f"failed: {reason}"}
        )
    )


def _touch(
    tx: Tx, provider: str, event_id: int, written: Sequence[str], removed: Sequence[str]
) -> None:
    refs = sorted({*written, *removed})
    if not refs:
        return
    t = m.event_touches.c
    tx.conn.execute(delete(m.event_touches).where(t.provider == provider, t.ref.in_(refs)))
    tx.conn.execute(
        m.event_touches.insert(),
        [{"provider": provider, "ref": ref, "event_id": event_id} for ref in refs],
    )


# -- the applier's lease ------------------------------------------------------------------


def take_lock(db: Database, tx: Tx, name: str, owner: str, ttl: timedelta) -> bool:
    """Take (or renew) the named lease for ``owner`` unless someone else holds it."""
    lk = m.locks.c
    tx.conn.execute(
        db.insert(m.locks).values(name=name).on_conflict_do_nothing(index_elements=["name"])
    )
    taken = tx.conn.execute(
        update(m.locks)
        .where(
            lk.name == name,
            or_(lk.owner.is_(None), lk.owner == owner, lk.expires_at < tx.now),
        )
        .values(owner=owner, expires_at=tx.now + ttl)
    ).rowcount
    return bool(taken)


def release_lock(tx: Tx, name: str, owner: str) -> None:
    lk = m.locks.c
    tx.conn.execute(
        update(m.locks)
        .where(lk.name == name, lk.owner == owner)
        .values(owner=None, expires_at=None)
    )


def prune(tx: Tx, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest applied events received before ``before``."""
    e = m.events.c
    oldest = (
        select(e.id)
        .where(e.status == EventStatus.APPLIED.value, e.received_at < before)
        .order_by(e.id)
        .limit(limit)
    )
    return int(tx.conn.execute(delete(m.events).where(e.id.in_(oldest))).rowcount)
