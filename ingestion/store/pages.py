"""Page writes: one page's entities, marks, checkpoint, error records and counters.

A page commits in one transaction. Its entities are written by the :class:`EntityWriter` of
the database, chosen once when the store is made: :class:`PostgresEntityWriter` sends a
page's columns as arrays (one statement per kind of row), :class:`SQLiteEntityWriter` uses
multi-row statements. Both sort a page's entities the same way: new (inserted), changed
(rewritten and marked), unchanged (marked only, the body is not rewritten), and owned by another
provider (refused with an error record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, text, update

from ingestion.entities import CANONICAL_VERSION, PreparedEntity, legacy_hash
from ingestion.store import changes
from ingestion.store import models as m
from ingestion.store.changes import ChangeSource
from ingestion.store.database import Database, Tx
from ingestion.store.dialects import text_array
from ingestion.store.records import (
    CheckBatch,
    CheckCommit,
    Claim,
    ErrorKind,
    Page,
    PageCommit,
    Problem,
)
from ingestion.store.transitions import hold_lease


class Marking(Protocol):
    """Whose entities a write is, and the cycle that marks them (a burst's :class:`Claim`, or
    an event's :class:`EventMarking`)."""

    @property
    def provider(self) -> str: ...

    @property
    def cycle_id(self) -> int: ...


@dataclass(frozen=True)
class EventMarking:
    """An event writes a provider's entities marked in its current cycle."""

    provider: str
    cycle_id: int


@dataclass
class EntityWrites:
    """What writing a page's entities did."""

    written: int = 0  # inserted or changed
    unchanged: int = 0
    conflicts: list[Problem] = field(default_factory=list)
    added: list[PreparedEntity] = field(default_factory=list)  # inserted
    changed: list[PreparedEntity] = field(default_factory=list)  # rewritten


class EntityWriter:
    """Writes a page's entities; a subclass per database supplies the statements."""

    def write(
        self, tx: Tx, claim: Marking, items: Sequence[PreparedEntity], *, expect_unchanged: bool
    ) -> EntityWrites:
        """Insert, rewrite or mark each entity of the page for ``claim``'s cycle.

        ``expect_unchanged`` is a hint (the previous page of the burst had unchanged entities):
        a writer may then mark before it looks up. It never changes the result.
        """
        result = EntityWrites()
        if not items:
            return result
        by_ref = {item.ref: item for item in items}
        if expect_unchanged:
            for ref in self.mark_if_unchanged(tx, claim, by_ref):
                del by_ref[ref]
                result.unchanged += 1
        existing = self.existing(tx, list(by_ref)) if by_ref else {}
        new: list[PreparedEntity] = []
        changed: list[PreparedEntity] = []
        same: list[str] = []
        for ref, item in by_ref.items():
            row = existing.get(ref)
            if row is None:
                new.append(item)
            elif row.provider != claim.provider:
                result.conflicts.append(
                    Problem(
                        item.name,
                        "owner",
                        f"{ref} is owned by provider {row.provider!r}; not overwritten",
                        ref,
                    )
                )
            elif row.hash == item.hash or (
                row.hash_version != CANONICAL_VERSION and row.hash == legacy_hash(item.body)
            ):
                same.append(ref)  # a hash of an older encoding is kept until the entity changes
            else:
                changed.append(item)
        inserted = self.insert_new(tx, claim, new) if new else set()
        for item in new:
            if item.ref in inserted:
                result.added.append(item)
            else:  # another provider wrote it a moment ago
                result.conflicts.append(
                    Problem(
                        item.name,
                        "owner",
                        f"{item.ref} was just written by another provider; not overwritten",
                        item.ref,
                    )
                )
        if changed:
            self.rewrite_changed(tx, claim, changed)
            result.changed = changed
        if same:
            self.mark_same(tx, claim, same)
        result.written += len(inserted) + len(changed)
        result.unchanged += len(same)
        return result

    # -- the statements -------------------------------------------------------------------

    def mark_if_unchanged(
        self, tx: Tx, claim: Marking, by_ref: dict[str, PreparedEntity]
    ) -> set[str]:
        """Mark what this provider owns with the same hash; the refs marked."""
        return set()

    def existing(self, tx: Tx, refs: list[str]) -> dict[str, Any]:
        """The owner, hash and hash version of those of ``refs`` in the catalog, by ref."""
        raise NotImplementedError

    def insert_new(self, tx: Tx, claim: Marking, new: list[PreparedEntity]) -> set[str]:
        """Insert entities no one owns; the refs actually inserted (a race may lose some)."""
        raise NotImplementedError

    def rewrite_changed(self, tx: Tx, claim: Marking, changed: list[PreparedEntity]) -> None:
        """Rewrite the body of entities this provider owns whose content changed; mark them."""
        raise NotImplementedError

    def mark_same(self, tx: Tx, claim: Marking, refs: list[str]) -> None:
        """Mark entities whose content did not change, without rewriting their body."""
        raise NotImplementedError


# Postgres writes a page with one statement per kind of row, its columns sent as arrays: no
# per-entity statement, parameter or row of Python work in the driver. Each statement finds at
# most a page of rows by ref, the primary key (``ref = ANY(:refs)``), and the writer rules out
# sequential scans for its transaction: on a catalog table of a few thousand pages the planner
# prices one scan of every row below a page's index look-ups (at 50,000 entities: 13 ms a page
# against 3 ms). The owner test is spelled IS NOT DISTINCT FROM (provider is NOT NULL, so it
# means "="): no index serves it, so the planner never reads the provider's index for every
# entity it owns either, even before the table has statistics.
_PG_INDEXED = text("SET LOCAL enable_seqscan = off")
_PAGE = (
    "unnest(CAST(:refs AS text[]), CAST(:locations AS text[]), CAST(:bodies AS text[]), "
    "CAST(:hashes AS text[])) AS page (ref, location_key, entity, hash)"
)
_PG_EXISTING = text(
    "SELECT ref, provider, hash, hash_version FROM catalog_entities "
    "WHERE ref = ANY(CAST(:refs AS text[]))"
)
# A new entity's row and its body go in one statement; a body row is written only for the rows
# inserted (a ref another provider owns is a conflict, not a new body).
_PG_INSERT_NEW = text(
    f"WITH page AS (SELECT * FROM {_PAGE}), "
    "new AS (INSERT INTO catalog_entities "
    "(ref, provider, location_key, hash, hash_version, mark_cycle, created_at, updated_at) "
    "SELECT page.ref, :provider, page.location_key, page.hash, :version, :cycle, :now, :now "
    "FROM page ON CONFLICT (ref) DO NOTHING RETURNING ref), "
    "body AS (INSERT INTO catalog_bodies (ref, entity) "
    "SELECT page.ref, CAST(page.entity AS jsonb) FROM page JOIN new USING (ref) "
    "ON CONFLICT (ref) DO UPDATE SET entity = EXCLUDED.entity) "
    "SELECT ref FROM new"
)
_PG_UPDATE_CHANGED = text(
    f"WITH page AS (SELECT * FROM {_PAGE}), "
    "changed AS (UPDATE catalog_entities AS e SET hash = page.hash, hash_version = :version, "
    "location_key = page.location_key, mark_cycle = :cycle, updated_at = :now FROM page "
    "WHERE e.ref = ANY(CAST(:refs AS text[])) AND e.ref = page.ref "
    "AND e.provider IS NOT DISTINCT FROM :provider RETURNING e.ref) "
    "UPDATE catalog_bodies AS b SET entity = CAST(page.entity AS jsonb) "
    "FROM page JOIN changed USING (ref) "
    "WHERE b.ref = ANY(CAST(:refs AS text[])) AND b.ref = page.ref"
)
_PG_MARK_SAME = text(
    "UPDATE catalog_entities SET mark_cycle = :cycle "
    "WHERE ref = ANY(CAST(:refs AS text[])) AND provider IS NOT DISTINCT FROM :provider"
)
# A hash is of the whole entity, its kind, namespace and name included, so an entity's hash
# never equals the hash of another ref's content: matching refs and hashes as two sets marks
# exactly the rows whose own hash is the page's.
# The refs marked come back as one array (one value to read, not a row for each).
_PG_MARK_IF_UNCHANGED = text(
    "WITH marked AS (UPDATE catalog_entities SET mark_cycle = :cycle "
    "WHERE ref = ANY(CAST(:refs AS text[])) AND hash = ANY(CAST(:hashes AS text[])) "
    "AND provider IS NOT DISTINCT FROM :provider RETURNING ref) "
    "SELECT coalesce(array_agg(ref), '{}') FROM marked"
)


def _page_arrays(items: Sequence[PreparedEntity]) -> dict[str, Any]:
    # The bodies stay a list: quoting a literal's worth of JSON costs more than it saves.
    return {
        "refs": text_array([i.ref for i in items]),
        "locations": text_array([i.location_key for i in items]),
        "bodies": [i.canonical for i in items],
        "hashes": text_array([i.hash for i in items]),
    }


class PostgresEntityWriter(EntityWriter):
    """Postgres: a page's columns as arrays through ``unnest``; marks first when a steady
    source is expected (most of it unchanged), so only the rest is looked up."""

    def write(
        self, tx: Tx, claim: Marking, items: Sequence[PreparedEntity], *, expect_unchanged: bool
    ) -> EntityWrites:
        if items:
            tx.conn.execute(_PG_INDEXED)
        return super().write(tx, claim, items, expect_unchanged=expect_unchanged)

    def mark_if_unchanged(
        self, tx: Tx, claim: Marking, by_ref: dict[str, PreparedEntity]
    ) -> set[str]:
        return set(
            tx.conn.scalar(
                _PG_MARK_IF_UNCHANGED,
                {
                    "refs": text_array(list(by_ref)),
                    "hashes": text_array([item.hash for item in by_ref.values()]),
                    "cycle": claim.cycle_id,
                    "provider": claim.provider,
                },
            )
        )

    def existing(self, tx: Tx, refs: list[str]) -> dict[str, Any]:
        return {row.ref: row for row in tx.conn.execute(_PG_EXISTING, {"refs": text_array(refs)})}

    def insert_new(self, tx: Tx, claim: Marking, new: list[PreparedEntity]) -> set[str]:
        params = {
            "provider": claim.provider,
            "cycle": claim.cycle_id,
            "now": tx.now,
            "version": CANONICAL_VERSION,
        }
        return set(tx.conn.scalars(_PG_INSERT_NEW, {**params, **_page_arrays(new)}))

    def rewrite_changed(self, tx: Tx, claim: Marking, changed: list[PreparedEntity]) -> None:
        params = {
            "provider": claim.provider,
            "cycle": claim.cycle_id,
            "now": tx.now,
            "version": CANONICAL_VERSION,
        }
        tx.conn.execute(_PG_UPDATE_CHANGED, {**params, **_page_arrays(changed)})

    def mark_same(self, tx: Tx, claim: Marking, refs: list[str]) -> None:
        tx.conn.execute(
            _PG_MARK_SAME,
            {"refs": text_array(refs), "cycle": claim.cycle_id, "provider": claim.provider},
        )


class SQLiteEntityWriter(EntityWriter):
    """SQLite (and any other database): multi-row statements through SQLAlchemy Core."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def existing(self, tx: Tx, refs: list[str]) -> dict[str, Any]:
        e = m.entities.c
        found = tx.conn.execute(
            select(e.ref, e.provider, e.hash, e.hash_version).where(e.ref.in_(refs))
        )
        return {row.ref: row for row in found}

    def insert_new(self, tx: Tx, claim: Marking, new: list[PreparedEntity]) -> set[str]:
        inserted = set(
            tx.conn.scalars(
                self.db.insert(m.entities)
                .on_conflict_do_nothing(index_elements=["ref"])
                .returning(m.entities.c.ref),
                [
                    {
                        "ref": i.ref,
                        "provider": claim.provider,
                        "location_key": i.location_key,
                        "hash": i.hash,
                        "hash_version": CANONICAL_VERSION,
                        "mark_cycle": claim.cycle_id,
                        "created_at": tx.now,
                        "updated_at": tx.now,
                    }
                    for i in new
                ],
            )
        )
        bodies = [{"ref": i.ref, "entity": i.canonical} for i in new if i.ref in inserted]
        if bodies:
            upsert = self.db.insert(m.bodies)
            tx.conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=["ref"], set_={"entity": upsert.excluded.entity}
                ),
                bodies,
            )
        return inserted

    def rewrite_changed(self, tx: Tx, claim: Marking, changed: list[PreparedEntity]) -> None:
        # The page's look-up found these owned by this provider, and SQLite lets one writer in
        # at a time: no one can have taken them since.
        e = m.entities.c
        tx.conn.execute(
            update(m.entities)
            .where(e.ref == bindparam("b_ref"), e.provider == claim.provider)
            .values(
                hash=bindparam("b_hash"),
                hash_version=CANONICAL_VERSION,
                location_key=bindparam("b_location"),
                mark_cycle=claim.cycle_id,
                updated_at=tx.now,
            ),
            [{"b_ref": i.ref, "b_hash": i.hash, "b_location": i.location_key} for i in changed],
        )
        b = m.bodies.c
        tx.conn.execute(
            update(m.bodies)
            .where(b.ref == bindparam("b_ref"))
            .values(entity=bindparam("b_entity")),
            [{"b_ref": i.ref, "b_entity": i.canonical} for i in changed],
        )

    def mark_same(self, tx: Tx, claim: Marking, refs: list[str]) -> None:
        e = m.entities.c
        tx.conn.execute(
            update(m.entities)
            .where(e.ref.in_(refs), e.provider == claim.provider)
            .values(mark_cycle=claim.cycle_id)
        )


def entity_writer_for(db: Database) -> EntityWriter:
    """The entity writer of ``db``'s database, chosen once."""
    if db.dialect == "postgresql":
        return PostgresEntityWriter()
    return SQLiteEntityWriter(db)


def _record_problems(
    tx: Tx,
    claim: Marking,
    page: int | None,
    rejected: Sequence[Problem],
    warnings: Sequence[Problem],
) -> None:
    problems = [(ErrorKind.ENTITY, p) for p in rejected]
    problems += [(ErrorKind.WARNING, p) for p in warnings]
    if not problems:
        return
    tx.conn.execute(
        insert(m.errors),
        [
            {
                "provider": claim.provider,
                "cycle_id": claim.cycle_id,
                "page": page,
                "kind": kind.value,
                "entity": p.entity,
                "ref": p.ref,
                "rule": p.rule,
                "message": p.message,
                "created_at": tx.now,
            }
            for kind, p in problems
        ],
    )


def commit_page(
    tx: Tx,
    writer: EntityWriter,
    claim: Claim,
    page: Page,
    sequence: int,
    lease: timedelta,
    *,
    expect_unchanged: bool,
) -> PageCommit:
    """Upsert the page's entities, mark them, record the checkpoint and counters.

    An entity an event added, changed or removed after the page's read began
    (``page.events_seen``) is left as the event made it: the page read the source before it.
    """
    hold_lease(tx, claim, lease)
    writes = _write(tx, writer, claim, page, ChangeSource.PAGE, expect_unchanged)
    written, unchanged = writes.written, writes.unchanged
    if page.kept_locations:
        e = m.entities.c
        tx.conn.execute(
            update(m.entities)
            .where(
                e.provider == claim.provider,
                e.location_key.in_(page.kept_locations),
                e.mark_cycle < claim.cycle_id,
            )
            .values(mark_cycle=claim.cycle_id)
        )
    rejected = [*page.rejected, *writes.conflicts]
    tx.conn.execute(
        _CHECKPOINT,
        {
            "cycle_id": claim.cycle_id,
            "sequence": sequence,
            "cursor": page.cursor,
            "entities": written + unchanged,
            "created_at": tx.now,
        },
    )
    _record_problems(tx, claim, sequence, rejected, page.warnings)
    added = {
        "add_pages": 1,
        "add_entities": written + unchanged,
        "add_written": written,
        "add_unchanged": unchanged,
        "add_rejected": len(rejected),
    }
    tx.conn.execute(_CYCLE_COUNTS, {"row": claim.cycle_id, "page_cursor": page.cursor, **added})
    tx.conn.execute(_BURST_COUNTS, {"row": claim.burst_id, **added})
    return PageCommit(sequence, written, unchanged, len(rejected))


# A page's bookkeeping statements are built once: building one for each page cost more of this
# process's Python (its expressions, then its cache key) than Postgres takes to run it.
_COUNTERS = ("pages", "entities", "written", "unchanged", "rejected")


def _adding_counts(table: Any, **values: Any) -> Any:
    """``UPDATE table`` of the row ``:row``: each counter plus ``:add_<counter>``, and
    ``values``."""
    added = {k: table.c[k] + bindparam(f"add_{k}") for k in _COUNTERS}
    return update(table).where(table.c.id == bindparam("row")).values(**added, **values)


_CHECKPOINT = insert(m.checkpoints)
_CYCLE_COUNTS = _adding_counts(
    m.cycles, cursor=bindparam("page_cursor", type_=m.cycles.c.cursor.type)
)
_BURST_COUNTS = _adding_counts(m.bursts)


def _write(
    tx: Tx,
    writer: EntityWriter,
    claim: Claim,
    page: Page,
    source: ChangeSource,
    expect_unchanged: bool,
) -> EntityWrites:
    """Write what events have not overtaken of ``page``, and note the changes for the feed."""
    items = not_overtaken(tx, claim.provider, page)
    writes = writer.write(tx, claim, items, expect_unchanged=expect_unchanged)
    changes.written(
        tx,
        claim.provider,
        source,
        added=writes.added,
        changed=writes.changed,
        cycle_id=claim.cycle_id,
    )
    return writes


def not_overtaken(tx: Tx, provider: str, page: Page) -> list[PreparedEntity]:
    """The page's entities but those an event added, changed or removed after the page's read
    began: the event is newer than what the page read."""
    items = page.entities
    if page.events_seen is None or not items:
        return items
    overtaken = touched_since(tx, provider, page.events_seen, [i.ref for i in items])
    return [i for i in items if i.ref not in overtaken] if overtaken else items


def touched_since(tx: Tx, provider: str, seen: int, refs: list[str]) -> set[str]:
    """Those of ``refs`` that an event applied after event ``seen`` added, changed or removed."""
    t = m.event_touches.c
    return set(
        tx.conn.scalars(
            select(t.ref).where(t.provider == provider, t.event_id > seen, t.ref.in_(refs))
        )
    )


def commit_check(
    tx: Tx, writer: EntityWriter, claim: Claim, batch: CheckBatch, lease: timedelta
) -> CheckCommit:
    """Commit what the source said about a batch of removal candidates, in one transaction:
    fresh entities of those still present are written and marked, candidates not confirmed
    gone are marked (kept for this cycle), and the checking phase moves past the batch. Those
    confirmed gone stay unmarked: the sweep removes them."""
    hold_lease(tx, claim, lease)
    page = batch.present
    writes = _write(tx, writer, claim, page, ChangeSource.CHECK, expect_unchanged=True)
    kept_refs = [ref for ref in batch.candidates if ref not in batch.gone]
    e = m.entities.c
    kept = 0
    if kept_refs:
        kept = int(
            tx.conn.execute(
                update(m.entities)
                .where(
                    e.provider == claim.provider,
                    e.ref.in_(kept_refs),
                    e.mark_cycle < claim.cycle_id,
                )
                .values(mark_cycle=claim.cycle_id)
            ).rowcount
        )
    present = {item.ref for item in page.entities}
    kept += sum(1 for ref in kept_refs if ref in present)  # marked by the writer (or an event)
    rejected = [*page.rejected, *writes.conflicts]
    _record_problems(tx, claim, None, rejected, page.warnings)
    checked = len(batch.candidates)
    c = m.cycles.c
    tx.conn.execute(
        update(m.cycles)
        .where(c.id == claim.cycle_id)
        .values(
            check_after=batch.candidates[-1] if batch.candidates else c.check_after,
            checked=c.checked + checked,
            kept=c.kept + kept,
            written=c.written + writes.written,
            unchanged=c.unchanged + writes.unchanged,
            rejected=c.rejected + len(rejected),
        )
    )
    b = m.bursts.c
    tx.conn.execute(
        update(m.bursts)
        .where(b.id == claim.burst_id)
        .values(
            checked=b.checked + checked,
            written=b.written + writes.written,
            unchanged=b.unchanged + writes.unchanged,
            rejected=b.rejected + len(rejected),
        )
    )
    gone = checked - kept
    return CheckCommit(checked, kept, gone, writes.written, writes.unchanged, len(rejected))
