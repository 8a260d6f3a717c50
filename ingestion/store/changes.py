"""The change feed: every change the engine makes to the catalog, in commit order.

A writing transaction collects its changes on :attr:`Tx.changes
<ingestion.store.database.Tx.changes>` (:func:`written`, :func:`removed`); the last thing it does
before it commits is to :meth:`~FeedWriter.record` them with the database's :class:`FeedWriter`,
chosen once. On Postgres, recording first takes a transaction lock that every writer of the feed
takes, and holds it until the commit: ids are drawn from the sequence in commit order, so a
consumer that has read every change up to an id never sees a change with a lower id commit
afterwards. Only transactions that changed the catalog take it (an unchanged page does not).
SQLite has one writer at a time already.

Replaying the feed from its first row (``added`` and ``changed`` write the entity,
``removed`` deletes the ref) rebuilds the catalog's content, as long as retention has removed
nothing (``INGESTION_CHANGES_RETENTION``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    delete,
    func,
    insert,
    literal,
    select,
    text,
)

from ingestion.store import models as m
from ingestion.store.dialects import bigint_array, text_array
from ingestion.store.models import UTCDateTime

if TYPE_CHECKING:
    from ingestion.entities import PreparedEntity
    from ingestion.store.database import Tx

# pg_advisory_xact_lock's key for the feed's writers: "ingestion.changes" as a number.
FEED_LOCK = 0x696E672E636867


class ChangeKind(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class ChangeSource(StrEnum):
    """What made a change."""

    PAGE = "page"  # a page of a cycle
    CHECK = "check"  # the checking phase: a fresh entity for a removal candidate
    SWEEP = "sweep"  # the sweep at the end of a cycle
    EVENT = "event"  # an event from the source
    OPERATOR = "operator"  # an operator: approved held-back removals, deleted a provider


@dataclass(frozen=True)
class Batch:
    """The changes one transaction committed: ids ``first`` to ``last``, ``count`` of them."""

    first: int
    last: int
    count: int
    providers: tuple[str, ...]


def _row(
    tx: Tx,
    kind: ChangeKind,
    ref: str,
    provider: str,
    source: ChangeSource,
    cycle_id: int | None,
    event_id: int | None,
    entity: str | None,
) -> dict[str, Any]:
    return {
        "ref": ref,
        "kind": kind.value,
        "provider": provider,
        "source": source.value,
        "cycle_id": cycle_id,
        "event_id": event_id,
        "entity": entity,
        "created_at": tx.now,
    }


def written(
    tx: Tx,
    provider: str,
    source: ChangeSource,
    *,
    added: Sequence[PreparedEntity] = (),
    changed: Sequence[PreparedEntity] = (),
    cycle_id: int | None = None,
    event_id: int | None = None,
) -> None:
    """Note entities ``added`` to the catalog and ``changed`` in it (with their new body)."""
    for kind, items in ((ChangeKind.ADDED, added), (ChangeKind.CHANGED, changed)):
        tx.changes.extend(
            _row(tx, kind, i.ref, provider, source, cycle_id, event_id, i.canonical) for i in items
        )


def removed(
    tx: Tx,
    provider: str,
    source: ChangeSource,
    refs: Iterable[str],
    *,
    cycle_id: int | None = None,
    event_id: int | None = None,
) -> None:
    """Note refs removed from the catalog."""
    tx.changes.extend(
        _row(tx, ChangeKind.REMOVED, ref, provider, source, cycle_id, event_id, None)
        for ref in refs
    )


# A change whose body is the one its transaction leaves in catalog_bodies (its ref's last change
# of the transaction) is sent without it: the row copies the stored jsonb, so a page's bodies
# cross the connection and are parsed once, for the catalog. Another change (its ref written
# again or removed later in the transaction) sends its own.
_PG_INSERT = text(
    "WITH written AS ("
    "INSERT INTO catalog_changes "
    "(ref, kind, provider, source, cycle_id, event_id, entity, created_at) "
    "SELECT c.ref, c.kind, c.provider, c.source, c.cycle_id, c.event_id, "
    "COALESCE(CAST(c.entity AS jsonb), b.entity), :now "
    "FROM unnest(CAST(:refs AS text[]), CAST(:kinds AS text[]), "
    "CAST(:providers AS text[]), CAST(:sources AS text[]), CAST(:cycles AS bigint[]), "
    "CAST(:events AS bigint[]), CAST(:entities AS text[])) WITH ORDINALITY "
    "AS c (ref, kind, provider, source, cycle_id, event_id, entity, n) "
    "LEFT JOIN catalog_bodies AS b ON c.entity IS NULL AND c.kind <> 'removed' AND b.ref = c.ref "
    "ORDER BY c.n "
    "RETURNING id, kind, entity IS NULL AS bodiless) "
    "SELECT min(id), max(id), count(*), "
    "count(*) FILTER (WHERE bodiless AND kind <> 'removed') FROM written"
)


# The columns of a removal: the ref, then the constants remove_where gives.
_REMOVAL_COLUMNS = ["ref", "kind", "provider", "source", "cycle_id", "created_at"]


def _providers(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(sorted({r["provider"] for r in rows}))


class FeedWriter:
    """Writes a transaction's changes to the feed; a subclass per database supplies the
    statements, chosen once when the :class:`~ingestion.store.database.Database` is made."""

    def record(self, tx: Tx) -> Batch:
        """Write ``tx``'s changes to the feed, in the order they were noted; its last
        statement."""
        raise NotImplementedError

    def remove_where(
        self,
        tx: Tx,
        scope: ColumnElement[bool],
        provider: str,
        source: ChangeSource,
        *,
        cycle_id: int | None = None,
    ) -> int:
        """Delete the entities ``scope`` selects and record each removal in the feed, in the
        database: a sweep of a million entities holds none of their refs in Python. How
        many."""
        first, last, count = self.delete_and_record(
            tx,
            scope,
            (
                literal(ChangeKind.REMOVED.value),
                literal(provider),
                literal(source.value),
                literal(cycle_id, BigInteger),
                literal(tx.now, UTCDateTime()),
            ),
        )
        if count:
            tx.recorded.append(Batch(int(first), int(last), int(count), (provider,)))
        return int(count)

    def delete_and_record(
        self, tx: Tx, scope: ColumnElement[bool], constants: tuple[Any, ...]
    ) -> tuple[Any, Any, Any]:
        """Delete what ``scope`` selects, write a removal for each ref (with the
        ``constants`` of :data:`_REMOVAL_COLUMNS`), in ref order; the first id, last id,
        count."""
        raise NotImplementedError


def delete_bodies(conn: Connection, scope: ColumnElement[bool]) -> None:
    """Delete the bodies of the catalog rows ``scope`` selects: before the rows themselves, in
    the transaction that deletes them."""
    e = m.entities.c
    conn.execute(delete(m.bodies).where(m.bodies.c.ref.in_(select(e.ref).where(scope))))


class PostgresFeedWriter(FeedWriter):
    """Postgres: under the feed's transaction lock (ids in commit order), a transaction's
    changes as arrays in one statement; removals deleted and written in one statement."""

    def record(self, tx: Tx) -> Batch:
        rows = tx.changes
        last = {row["ref"]: n for n, row in enumerate(rows)}
        # A removal has no body to send; the statement never joins one to it.
        sent = [None if last[row["ref"]] == n else row["entity"] for n, row in enumerate(rows)]
        tx.sql.serialise(tx.conn, FEED_LOCK)
        first, end, count, bodiless = tx.conn.execute(
            _PG_INSERT,
            {
                "now": tx.now,
                "refs": text_array([r["ref"] for r in rows]),
                "kinds": text_array([r["kind"] for r in rows]),
                "providers": text_array([r["provider"] for r in rows]),
                "sources": text_array([r["source"] for r in rows]),
                "cycles": bigint_array([r["cycle_id"] for r in rows]),
                "events": bigint_array([r["event_id"] for r in rows]),
                "entities": sent,
            },
        ).one()
        if bodiless:  # the transaction rolls back: no change goes to the feed without its body
            raise RuntimeError(f"{bodiless} change(s) of the feed found no body in catalog_bodies")
        return Batch(int(first), int(end), int(count), _providers(rows))

    def delete_and_record(
        self, tx: Tx, scope: ColumnElement[bool], constants: tuple[Any, ...]
    ) -> tuple[Any, Any, Any]:
        tx.sql.serialise(tx.conn, FEED_LOCK)
        gone = delete(m.entities).where(scope).returning(m.entities.c.ref).cte("gone")
        b = m.bodies.c
        bodies = delete(m.bodies).where(b.ref.in_(select(gone.c.ref))).cte("bodies")
        written = (
            insert(m.changes)
            .from_select(_REMOVAL_COLUMNS, select(gone.c.ref, *constants).order_by(gone.c.ref))
            .returning(m.changes.c.id)
            .cte("written")
        )
        first, last, count = tx.conn.execute(
            select(func.min(written.c.id), func.max(written.c.id), func.count())
            .select_from(written)
            .add_cte(bodies)  # not read, but run: a data-modifying CTE always runs to the end
        ).one()
        return first, last, count


class SQLiteFeedWriter(FeedWriter):
    """SQLite: one writer at a time, so ids come in commit order without a lock; multi-row
    statements."""

    def record(self, tx: Tx) -> Batch:
        rows = tx.changes
        ids = list(tx.conn.scalars(insert(m.changes).returning(m.changes.c.id), rows))
        return Batch(min(ids), max(ids), len(ids), _providers(rows))

    def delete_and_record(
        self, tx: Tx, scope: ColumnElement[bool], constants: tuple[Any, ...]
    ) -> tuple[Any, Any, Any]:
        e = m.entities.c
        c = m.changes.c
        # One writer at a time: every id this insert hands out is above the largest so far.
        before = last_id(tx.conn)
        tx.conn.execute(
            insert(m.changes).from_select(
                _REMOVAL_COLUMNS, select(e.ref, *constants).where(scope).order_by(e.ref)
            )
        )
        first, last, count = tx.conn.execute(
            select(func.min(c.id), func.max(c.id), func.count()).where(c.id > before)
        ).one()
        delete_bodies(tx.conn, scope)
        removed = tx.conn.execute(delete(m.entities).where(scope)).rowcount
        assert removed == count, (removed, count)
        return first, last, count


def feed_writer_for(dialect: str) -> FeedWriter:
    """The feed writer of the database named ``dialect`` (SQLAlchemy's name), chosen once."""
    if dialect == "postgresql":
        return PostgresFeedWriter()
    return SQLiteFeedWriter()


def merged(batches: Sequence[Batch]) -> Batch | None:
    """One batch for all a transaction recorded; ``None`` if it recorded nothing."""
    if not batches:
        return None
    providers = tuple(sorted({p for b in batches for p in b.providers}))
    return Batch(
        min(b.first for b in batches),
        max(b.last for b in batches),
        sum(b.count for b in batches),
        providers,
    )


def read(conn: Connection, *, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` changes with an id above ``after``, in id order."""
    c = m.changes.c
    stmt = select(m.changes).where(c.id > after).order_by(c.id).limit(limit)
    return [dict(row._mapping) for row in conn.execute(stmt)]


def last_id(conn: Connection) -> int:
    """The id of the latest change, 0 when the feed is empty."""
    return int(conn.execute(select(func.coalesce(func.max(m.changes.c.id), 0))).scalar_one())


def prune(tx: Tx, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest changes recorded before ``before``."""
    c = m.changes.c
    oldest = select(c.id).where(c.created_at < before).order_by(c.id).limit(limit)
    return int(tx.conn.execute(delete(m.changes).where(c.id.in_(oldest))).rowcount)
