"""Every SQL statement of the engine: schedule, claims, page commits, sweep, catalog reads."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ingestion import state
from ingestion.entities import PreparedEntity
from ingestion.provider import ProviderOptions
from ingestion.state import Action, CycleStatus, Schedule, Transition
from ingestion.store import models as m
from ingestion.store.records import (
    Claim,
    Doorbell,
    ErrorKind,
    LostBurst,
    Page,
    PageCommit,
    Problem,
    ProviderStatus,
    Skip,
    SweepResult,
)

log = logging.getLogger("ingestion.store")


# Postgres writes a page with one statement per kind of row, its columns sent as arrays: no
# per-entity statement, parameter or row of Python work in the driver. The owner test is
# spelled IS NOT DISTINCT FROM (provider is NOT NULL, so it means "="): it cannot use an index,
# so the planner finds the page's rows by ref, the primary key, even before the table has
# statistics, instead of scanning every entity of the provider for each page.
_PAGE = (
    "unnest(CAST(:refs AS text[]), CAST(:locations AS text[]), CAST(:bodies AS text[]), "
    "CAST(:hashes AS text[])) AS page (ref, location_key, entity, hash)"
)
_PG_EXISTING = text(
    "SELECT ref, provider, hash FROM catalog_entities WHERE ref = ANY(CAST(:refs AS text[]))"
)
_PG_INSERT_NEW = text(
    "INSERT INTO catalog_entities "
    "(ref, provider, location_key, entity, hash, mark_cycle, created_at, updated_at) "
    "SELECT page.ref, :provider, page.location_key, CAST(page.entity AS jsonb), page.hash, "
    f":cycle, :now, :now FROM {_PAGE} "
    "ON CONFLICT (ref) DO NOTHING RETURNING ref"
)
_PG_UPDATE_CHANGED = text(
    "UPDATE catalog_entities AS e SET entity = CAST(page.entity AS jsonb), hash = page.hash, "
    "location_key = page.location_key, mark_cycle = :cycle, updated_at = :now "
    f"FROM {_PAGE} WHERE e.ref = page.ref AND e.provider IS NOT DISTINCT FROM :provider"
)
_PG_MARK_SAME = text(
    "UPDATE catalog_entities AS e SET mark_cycle = :cycle "
    "FROM unnest(CAST(:refs AS text[])) AS page (ref) "
    "WHERE e.ref = page.ref AND e.provider IS NOT DISTINCT FROM :provider"
)
_PG_MARK_IF_UNCHANGED = text(
    "UPDATE catalog_entities AS e SET mark_cycle = :cycle "
    "FROM unnest(CAST(:refs AS text[]), CAST(:hashes AS text[])) AS page (ref, hash) "
    "WHERE e.ref = page.ref AND e.hash = page.hash AND e.provider IS NOT DISTINCT FROM :provider "
    "RETURNING e.ref"
)


def _page_arrays(items: Sequence[PreparedEntity]) -> dict[str, list[Any]]:
    return {
        "refs": [i.ref for i in items],
        "locations": [i.location_key for i in items],
        "bodies": [i.canonical for i in items],
        "hashes": [i.hash for i in items],
    }


class LeaseLost(RuntimeError):
    """This worker no longer holds the provider: another step replaced the one it was running."""


class UnknownProvider(LookupError):
    """No provider of that name is registered in the database."""


def _connect_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Own the transactions (pysqlite's implicit ones cannot BEGIN IMMEDIATE) and let writers
    # from several processes queue behind each other instead of failing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite(conn: Connection) -> None:
    # A writing transaction takes the write lock at BEGIN: a read-then-write transaction can
    # then never fail with SQLITE_BUSY halfway. Reads begin deferred and do not queue.
    if conn.get_execution_options().get("ingestion_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_db_engine(url: str) -> Engine:
    """An engine set up for the engine's access pattern on Postgres or SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, poolclass=NullPool)
        event.listen(engine, "connect", _connect_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=4,
            executemany_mode="values_plus_batch",
        )
    return create_engine(url, pool_pre_ping=True)


def _row_dict(row: Row[Any] | None) -> dict[str, Any] | None:
    return None if row is None else dict(row._mapping)


class Store:
    """The only place that speaks SQL. Each public method is one transaction."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_db_engine(url)
        self.dialect = self.engine.dialect.name
        # provider -> (cycle, whether its last page had unchanged entities): a hint for the
        # order of a page's statements, never a fact the engine relies on.
        self._had_unchanged: dict[str, tuple[int, bool]] = {}

    # -- set-up ---------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic."""
        from ingestion.store.migrate import upgrade

        upgrade(self.engine, revision)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A writing transaction."""
        with self.engine.connect() as conn:
            conn.execution_options(ingestion_write=True)
            with conn.begin():
                yield conn

    def now(self, conn: Connection) -> datetime:
        """The database's clock: every decision about what is due uses it."""
        if self.dialect == "postgresql":
            value = conn.execute(select(func.clock_timestamp())).scalar_one()
            assert isinstance(value, datetime)
            return value.astimezone(UTC)
        # SQLite is embedded: its clock is this machine's.
        return datetime.now(UTC)

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        return insert(table)

    # -- schedule -------------------------------------------------------------------------

    def ensure_providers(self, names: Iterable[str]) -> list[str]:
        """Give every registered provider a row; a new one is due to begin a cycle now."""
        wanted = list(names)
        if not wanted:
            return []
        with self._tx() as conn:
            now = self.now(conn)
            stmt = (
                self._insert(m.providers)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(m.providers.c.name)
            )
            rows = [
                {
                    "name": name,
                    "action": Action.REST.value,
                    "due_at": now,
                    "attempts": 0,
                    "ticket": 1,
                    "blocked_count": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for name in wanted
            ]
            created = [row.name for row in conn.execute(stmt, rows)]
        for name in created:
            log.info("provider %s registered; its first cycle is due now", name)
        return created

    def due_steps(
        self, names: Iterable[str], *, resend_after: timedelta, limit: int = 1000
    ) -> list[Doorbell]:
        """Steps that are due, held by no live lease, and not announced in ``resend_after``.

        Every transition counts as an announcement (its caller sends the task), so a step whose
        message was lost is announced again ``resend_after`` after it was recorded or due.
        """
        p = m.providers.c
        with self._tx() as conn:
            now = self.now(conn)
            rows = conn.execute(
                select(p.name, p.ticket, p.action, p.cycle_id, p.due_at)
                .where(p.name.in_(list(names)), p.due_at <= now)
                .where((p.lease_owner.is_(None)) | (p.lease_expires_at < now))
                .where((p.sent_at.is_(None)) | (p.sent_at <= now - resend_after))
                .order_by(p.due_at)
                .limit(limit)
            ).all()
            doorbells = [self._doorbell(conn, row, now) for row in rows]
            if rows:
                conn.execute(
                    update(m.providers)
                    .where(p.name.in_([row.name for row in rows]))
                    .values(sent_at=now)
                )
        return doorbells

    def _doorbell(self, conn: Connection, row: Any, now: datetime) -> Doorbell:
        burst = 1
        if row.cycle_id is not None and Action(row.action) is not Action.REST:
            bursts = conn.execute(
                select(m.cycles.c.bursts).where(m.cycles.c.id == row.cycle_id)
            ).scalar()
            burst = (bursts or 0) + 1
        return Doorbell(
            provider=row.name,
            ticket=row.ticket,
            action=Action(row.action),
            cycle_id=row.cycle_id if Action(row.action) is not Action.REST else None,
            burst=burst,
            countdown=max(0.0, (row.due_at - now).total_seconds()),
        )

    def _lock_provider(self, conn: Connection, name: str, *, lock: bool = True) -> Row[Any]:
        stmt = select(m.providers).where(m.providers.c.name == name)
        if lock and self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise UnknownProvider(f"no provider named {name!r} in the database")
        return row

    def claim(
        self, name: str, ticket: int, owner: str, lease: timedelta, options: ProviderOptions
    ) -> Claim | Skip | LostBurst:
        """Take the provider for one burst, if the message's step is still the pending one."""
        with self._tx() as conn:
            now = self.now(conn)
            try:
                row = self._lock_provider(conn, name)
            except UnknownProvider as exc:
                return Skip(str(exc))
            if row.ticket != ticket:
                return Skip(f"stale message: ticket {ticket}, the pending step is {row.ticket}")
            if row.lease_owner is not None and row.lease_expires_at >= now:
                return Skip(
                    f"duplicate message: {row.lease_owner} holds ticket {ticket} "
                    f"until {row.lease_expires_at.isoformat()}"
                )
            if row.due_at > now:
                return Skip(f"early message: the step is due at {row.due_at.isoformat()}")
            schedule = Schedule(Action(row.action), row.due_at, row.attempts)
            if row.lease_owner is not None:
                reason = (
                    f"burst lost: {row.lease_owner} held provider {name!r} until "
                    f"{row.lease_expires_at.isoformat()} and never finished (the worker was "
                    "killed or the burst outran its time limit)"
                )
                conn.execute(
                    update(m.bursts)
                    .where(m.bursts.c.provider == name, m.bursts.c.ticket == ticket)
                    .values(outcome="lost", error=reason, ended_at=now)
                )
                doorbell = self._fail(conn, row, schedule, reason, now, options)
                return LostBurst(reason, doorbell)
            cycle_id = row.cycle_id
            if schedule.action is Action.REST or cycle_id is None:
                transition = state.begin_cycle(now)
                cycle_id = self._open_cycle(conn, name, now)
                schedule = transition.schedule
            cycle = conn.execute(select(m.cycles).where(m.cycles.c.id == cycle_id)).one()
            number = cycle.bursts + 1
            burst_id = conn.execute(
                insert(m.bursts)
                .values(
                    provider=name,
                    cycle_id=cycle_id,
                    number=number,
                    ticket=ticket,
                    worker=owner,
                    outcome="running",
                    started_at=now,
                )
                .returning(m.bursts.c.id)
            ).scalar_one()
            conn.execute(update(m.cycles).where(m.cycles.c.id == cycle_id).values(bursts=number))
            conn.execute(
                update(m.providers)
                .where(m.providers.c.name == name, m.providers.c.ticket == ticket)
                .values(
                    action=schedule.action.value,
                    due_at=schedule.due_at,
                    attempts=schedule.attempts,
                    cycle_id=cycle_id,
                    lease_owner=owner,
                    lease_expires_at=now + lease,
                    updated_at=now,
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
            )

    def _open_cycle(self, conn: Connection, name: str, now: datetime) -> int:
        cycle_id = conn.execute(
            insert(m.cycles)
            # The counters start at their column defaults (0).
            .values(provider=name, status=CycleStatus.RUNNING.value, started_at=now)
            .returning(m.cycles.c.id)
        ).scalar_one()
        assert isinstance(cycle_id, int)
        return cycle_id

    def _close_cycle(
        self, conn: Connection, cycle_id: int | None, status: CycleStatus, now: datetime
    ) -> None:
        if cycle_id is None:
            return
        conn.execute(
            update(m.cycles)
            .where(m.cycles.c.id == cycle_id, m.cycles.c.status == CycleStatus.RUNNING.value)
            .values(status=status.value, ended_at=now)
        )

    def _hold(self, conn: Connection, claim: Claim, now: datetime, lease: timedelta) -> None:
        # The guard of every write a burst makes: this worker must still hold this step.
        p = m.providers.c
        result = conn.execute(
            update(m.providers)
            .where(p.name == claim.provider, p.ticket == claim.ticket, p.lease_owner == claim.owner)
            .values(lease_expires_at=now + lease)
        )
        if result.rowcount != 1:
            raise LeaseLost(
                f"provider {claim.provider!r}: ticket {claim.ticket} is no longer held by "
                f"{claim.owner} (an operator or a recovery replaced the step)"
            )

    def _apply(
        self,
        conn: Connection,
        name: str,
        transition: Transition,
        cycle_id: int | None,
        now: datetime,
        **values: Any,
    ) -> Doorbell:
        """Write a transition: close/open the cycle, bump the ticket, release any lease."""
        if transition.close_cycle is not None:
            self._close_cycle(conn, cycle_id, transition.close_cycle, now)
        burst = 1
        if transition.open_cycle:
            cycle_id = self._open_cycle(conn, name, now)
        elif cycle_id is not None and transition.schedule.cycle_open:
            burst = (
                conn.execute(select(m.cycles.c.bursts).where(m.cycles.c.id == cycle_id)).scalar()
                or 0
            ) + 1
        sched = transition.schedule
        ticket = conn.execute(
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
                sent_at=now,
                updated_at=now,
                **values,
            )
            .returning(m.providers.c.ticket)
        ).scalar_one()
        return Doorbell(
            provider=name,
            ticket=ticket,
            action=sched.action,
            cycle_id=cycle_id if sched.cycle_open else None,
            burst=burst,
            countdown=max(0.0, (sched.due_at - now).total_seconds()),
        )

    def _fail(
        self,
        conn: Connection,
        row: Any,
        schedule: Schedule,
        message: str,
        now: datetime,
        options: ProviderOptions,
    ) -> Doorbell:
        conn.execute(
            insert(m.errors).values(
                provider=row.name,
                cycle_id=row.cycle_id,
                page=None,
                kind=ErrorKind.BURST.value,
                entity=None,
                ref=None,
                rule=None,
                message=message,
                created_at=now,
            )
        )
        transition = state.after_failure(schedule, now, options)
        if transition.close_cycle is CycleStatus.CANCELLED:
            log.warning(
                "provider %s: the last backoff step failed; cycle %s cancelled, starting over",
                row.name,
                row.cycle_id,
            )
        return self._apply(
            conn,
            row.name,
            transition,
            row.cycle_id,
            now,
            last_error=message,
            last_error_at=now,
        )

    # -- a burst's writes -----------------------------------------------------------------

    def commit_page(self, claim: Claim, page: Page, sequence: int, lease: timedelta) -> PageCommit:
        """Upsert the page's entities, mark them, record the mark and cursor: one transaction."""
        with self._tx() as conn:
            now = self.now(conn)
            self._hold(conn, claim, now, lease)
            written, unchanged, conflicts = self._upsert(conn, claim, page, now)
            if page.kept_locations:
                e = m.entities.c
                conn.execute(
                    update(m.entities)
                    .where(
                        e.provider == claim.provider,
                        e.location_key.in_(page.kept_locations),
                        e.mark_cycle < claim.cycle_id,
                    )
                    .values(mark_cycle=claim.cycle_id)
                )
            rejected = [*page.rejected, *conflicts]
            conn.execute(
                insert(m.marks).values(
                    cycle_id=claim.cycle_id,
                    sequence=sequence,
                    cursor=page.cursor,
                    entities=written + unchanged,
                    created_at=now,
                )
            )
            problems = [(ErrorKind.ENTITY, p) for p in rejected]
            problems += [(ErrorKind.WARNING, p) for p in page.warnings]
            if problems:
                conn.execute(
                    insert(m.errors),
                    [
                        {
                            "provider": claim.provider,
                            "cycle_id": claim.cycle_id,
                            "page": sequence,
                            "kind": kind.value,
                            "entity": p.entity,
                            "ref": p.ref,
                            "rule": p.rule,
                            "message": p.message,
                            "created_at": now,
                        }
                        for kind, p in problems
                    ],
                )
            c = m.cycles.c
            conn.execute(
                update(m.cycles)
                .where(c.id == claim.cycle_id)
                .values(
                    cursor=page.cursor,
                    pages=c.pages + 1,
                    entities=c.entities + written + unchanged,
                    written=c.written + written,
                    unchanged=c.unchanged + unchanged,
                    rejected=c.rejected + len(rejected),
                )
            )
            b = m.bursts.c
            conn.execute(
                update(m.bursts)
                .where(b.id == claim.burst_id)
                .values(
                    pages=b.pages + 1,
                    entities=b.entities + written + unchanged,
                    written=b.written + written,
                    unchanged=b.unchanged + unchanged,
                    rejected=b.rejected + len(rejected),
                )
            )
        return PageCommit(sequence, written, unchanged, len(rejected))

    def _upsert(
        self, conn: Connection, claim: Claim, page: Page, now: datetime
    ) -> tuple[int, int, list[Problem]]:
        if not page.entities:
            return 0, 0, []
        by_ref = {item.ref: item for item in page.entities}
        marked = self._mark_if_unchanged(conn, claim, by_ref) if self._mark_first(claim) else set()
        for ref in marked:
            del by_ref[ref]
        existing = self._existing(conn, list(by_ref)) if by_ref else {}
        conflicts: list[Problem] = []
        new, changed, same = [], [], []
        for ref, item in by_ref.items():
            row = existing.get(ref)
            if row is None:
                new.append(item)
            elif row.provider != claim.provider:
                conflicts.append(
                    Problem(
                        item.name,
                        "owner",
                        f"{ref} is owned by provider {row.provider!r}; not overwritten",
                        ref,
                    )
                )
            elif row.hash == item.hash:
                same.append(ref)
            else:
                changed.append(item)
        inserted = self._insert_new(conn, claim, new, now) if new else set()
        for item in new:
            if item.ref not in inserted:  # another provider wrote it a moment ago
                conflicts.append(
                    Problem(
                        item.name,
                        "owner",
                        f"{item.ref} was just written by another provider; not overwritten",
                        item.ref,
                    )
                )
        if changed:
            self._rewrite_changed(conn, claim, changed, now)
        if same:
            self._mark_unchanged(conn, claim, same)
        self._had_unchanged[claim.provider] = (claim.cycle_id, bool(marked or same))
        return len(inserted) + len(changed), len(marked) + len(same), conflicts

    def _mark_first(self, claim: Claim) -> bool:
        """Whether to mark unchanged entities before looking the page up (Postgres only).

        Most of a steady source is unchanged, so a page begins by marking those in one
        statement and looks up only the rest; a first cycle has nothing to mark, so once a
        page of the cycle found none, the next page looks up first.
        """
        if self.dialect != "postgresql":
            return False
        cycle, had_unchanged = self._had_unchanged.get(claim.provider, (None, True))
        return cycle != claim.cycle_id or had_unchanged

    def _mark_if_unchanged(
        self, conn: Connection, claim: Claim, by_ref: dict[str, PreparedEntity]
    ) -> set[str]:
        """Mark the entities this provider owns whose hash is the same; their refs."""
        return set(
            conn.scalars(
                _PG_MARK_IF_UNCHANGED,
                {
                    "refs": list(by_ref),
                    "hashes": [item.hash for item in by_ref.values()],
                    "cycle": claim.cycle_id,
                    "provider": claim.provider,
                },
            )
        )

    def _existing(self, conn: Connection, refs: list[str]) -> dict[str, Any]:
        """The owner and hash of those of ``refs`` that are in the catalog, by ref."""
        if self.dialect == "postgresql":
            found = conn.execute(_PG_EXISTING, {"refs": refs})
        else:
            e = m.entities.c
            found = conn.execute(select(e.ref, e.provider, e.hash).where(e.ref.in_(refs)))
        return {row.ref: row for row in found}

    def _insert_new(
        self, conn: Connection, claim: Claim, new: list[PreparedEntity], now: datetime
    ) -> set[str]:
        """Insert entities no one owns; the refs actually inserted (a race may lose some)."""
        if self.dialect == "postgresql":
            arrays = _page_arrays(new)
            return set(
                conn.scalars(
                    _PG_INSERT_NEW,
                    {"provider": claim.provider, "cycle": claim.cycle_id, "now": now, **arrays},
                )
            )
        return set(
            conn.scalars(
                self._insert(m.entities)
                .on_conflict_do_nothing(index_elements=["ref"])
                .returning(m.entities.c.ref),
                [
                    {
                        "ref": i.ref,
                        "provider": claim.provider,
                        "location_key": i.location_key,
                        "entity": i.canonical,
                        "hash": i.hash,
                        "mark_cycle": claim.cycle_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in new
                ],
            )
        )

    def _rewrite_changed(
        self, conn: Connection, claim: Claim, changed: list[PreparedEntity], now: datetime
    ) -> None:
        """Rewrite the body of entities this provider owns whose content changed, and mark them."""
        if self.dialect == "postgresql":
            arrays = _page_arrays(changed)
            conn.execute(
                _PG_UPDATE_CHANGED,
                {"provider": claim.provider, "cycle": claim.cycle_id, "now": now, **arrays},
            )
            return
        e = m.entities.c
        conn.execute(
            update(m.entities)
            .where(e.ref == bindparam("b_ref"), e.provider == claim.provider)
            .values(
                entity=bindparam("b_entity"),
                hash=bindparam("b_hash"),
                location_key=bindparam("b_location"),
                mark_cycle=claim.cycle_id,
                updated_at=now,
            ),
            [
                {
                    "b_ref": i.ref,
                    "b_entity": i.canonical,
                    "b_hash": i.hash,
                    "b_location": i.location_key,
                }
                for i in changed
            ],
        )

    def _mark_unchanged(self, conn: Connection, claim: Claim, refs: list[str]) -> None:
        """Mark entities whose content did not change, without rewriting their body."""
        if self.dialect == "postgresql":
            conn.execute(
                _PG_MARK_SAME, {"refs": refs, "cycle": claim.cycle_id, "provider": claim.provider}
            )
            return
        e = m.entities.c
        conn.execute(
            update(m.entities)
            .where(e.ref.in_(refs), e.provider == claim.provider)
            .values(mark_cycle=claim.cycle_id)
        )

    def finish_burst(
        self, claim: Claim, *, done: bool, lease: timedelta, options: ProviderOptions
    ) -> tuple[Doorbell, SweepResult | None]:
        """Close the burst: schedule the next one, or sweep, complete the cycle and rest."""
        with self._tx() as conn:
            now = self.now(conn)
            self._hold(conn, claim, now, lease)
            sweep = self._sweep(conn, claim, now, options) if done else None
            conn.execute(
                update(m.bursts)
                .where(m.bursts.c.id == claim.burst_id)
                .values(
                    outcome="done" if done else "continued",
                    ended_at=now,
                    removed=sweep.removed if sweep else 0,
                )
            )
            transition = state.after_burst(done, now, options)
            doorbell = self._apply(conn, claim.provider, transition, claim.cycle_id, now)
        return doorbell, sweep

    def fail_burst(self, claim: Claim, message: str, options: ProviderOptions) -> Doorbell | None:
        """Record a failed burst and schedule the backoff; ``None`` if the step was replaced."""
        with self._tx() as conn:
            now = self.now(conn)
            row = self._end_burst(conn, claim, "failed", message, now)
            if row is None:
                return None
            schedule = Schedule(Action(row.action), row.due_at, row.attempts)
            return self._fail(conn, row, schedule, message, now, options)

    def _end_burst(
        self, conn: Connection, claim: Claim, outcome: str, error: str, now: datetime
    ) -> Row[Any] | None:
        """Close the burst row; the provider row, or ``None`` if the step was replaced."""
        row = self._lock_provider(conn, claim.provider)
        if row.ticket != claim.ticket or row.lease_owner != claim.owner:
            return None
        conn.execute(
            update(m.bursts)
            .where(m.bursts.c.id == claim.burst_id)
            .values(outcome=outcome, error=error, ended_at=now)
        )
        return row

    def wait_burst(self, claim: Claim, wait: timedelta, reason: str) -> Doorbell | None:
        """Record a burst the source paused (a rate limit): its step runs again after ``wait``.

        No attempt is counted. ``None`` if the step was replaced meanwhile.
        """
        with self._tx() as conn:
            now = self.now(conn)
            row = self._end_burst(conn, claim, "waiting", reason, now)
            if row is None:
                return None
            transition = state.after_rate_limit(
                Schedule(Action(row.action), row.due_at, row.attempts), now, wait
            )
            return self._apply(conn, claim.provider, transition, row.cycle_id, now)

    def _sweep(
        self, conn: Connection, claim: Claim, now: datetime, options: ProviderOptions
    ) -> SweepResult:
        e = m.entities.c
        row = self._lock_provider(conn, claim.provider)
        cycle = claim.cycle_id
        blocked_cycle = row.blocked_cycle_id
        confirmed_expr = (
            func.coalesce(func.sum(case((e.mark_cycle < blocked_cycle, 1), else_=0)), 0)
            if blocked_cycle is not None
            else literal(0)
        )
        counts = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((e.mark_cycle == cycle, 1), else_=0)), 0),
                confirmed_expr,
            ).where(e.provider == claim.provider)
        ).one()
        owned, marked, confirmed = (int(v) for v in counts)
        fresh = owned - marked - confirmed
        decision = state.decide_sweep(
            owned=owned, marked=marked, fresh=fresh, confirmed=confirmed, options=options
        )
        removed = 0
        if decision.remove_fresh:
            removed = conn.execute(
                delete(m.entities).where(e.provider == claim.provider, e.mark_cycle < cycle)
            ).rowcount
        elif decision.remove_confirmed and blocked_cycle is not None:
            removed = conn.execute(
                delete(m.entities).where(e.provider == claim.provider, e.mark_cycle < blocked_cycle)
            ).rowcount
        blocked = (owned - marked) - removed if decision.blocked_reason else 0
        if decision.blocked_reason is None:
            new_blocked_cycle = None
        elif decision.remove_fresh or fresh == 0 or marked == 0:
            new_blocked_cycle = blocked_cycle  # an empty cycle is no evidence of removal
        else:
            new_blocked_cycle = cycle
        conn.execute(
            update(m.providers)
            .where(m.providers.c.name == claim.provider)
            .values(
                blocked_cycle_id=new_blocked_cycle,
                blocked_reason=decision.blocked_reason,
                blocked_count=blocked,
            )
        )
        conn.execute(
            update(m.cycles)
            .where(m.cycles.c.id == cycle)
            .values(
                removed=removed,
                blocked=blocked,
                blocked_reason=decision.blocked_reason,
            )
        )
        if decision.blocked_reason:
            log.warning("provider %s: sweep held back: %s", claim.provider, decision.blocked_reason)
        return SweepResult(removed, blocked, decision.blocked_reason)

    # -- operator steps -------------------------------------------------------------------

    def _operate(self, name: str, step: Any) -> Doorbell:
        with self._tx() as conn:
            now = self.now(conn)
            row = self._lock_provider(conn, name)
            if row.lease_owner is not None:
                conn.execute(
                    update(m.bursts)
                    .where(m.bursts.c.provider == name, m.bursts.c.ticket == row.ticket)
                    .values(outcome="interrupted", ended_at=now)
                )
            transition = step(Schedule(Action(row.action), row.due_at, row.attempts), now)
            return self._apply(conn, name, transition, row.cycle_id, now)

    def trigger(self, name: str) -> Doorbell:
        """Make the pending step due now."""
        with self._tx() as conn:
            now = self.now(conn)
            row = self._lock_provider(conn, name)
            if row.lease_owner is not None and row.lease_expires_at >= now:
                return self._doorbell(conn, row, now)  # a burst is running: nothing to hurry
            transition = state.operator_trigger(
                Schedule(Action(row.action), row.due_at, row.attempts), now
            )
            return self._apply(conn, name, transition, row.cycle_id, now)

    def start(self, name: str) -> Doorbell:
        """Cancel the open cycle (if any) and begin a new one now."""
        return self._operate(name, state.operator_start)

    def cancel(self, name: str, options: ProviderOptions) -> Doorbell:
        """Cancel the open cycle without sweeping; the provider rests."""
        return self._operate(name, lambda s, now: state.operator_cancel(s, now, options))

    def reset(self, name: str) -> Doorbell:
        """Forget the provider's ingestion records; it begins afresh now. Entities stay."""
        with self._tx() as conn:
            now = self.now(conn)
            self._lock_provider(conn, name)
            cycle_ids = select(m.cycles.c.id).where(m.cycles.c.provider == name)
            conn.execute(delete(m.marks).where(m.marks.c.cycle_id.in_(cycle_ids)))
            conn.execute(delete(m.cycles).where(m.cycles.c.provider == name))
            conn.execute(delete(m.bursts).where(m.bursts.c.provider == name))
            conn.execute(delete(m.errors).where(m.errors.c.provider == name))
            return self._apply(
                conn,
                name,
                Transition(Schedule(Action.REST, now, 0)),
                None,
                now,
                last_error=None,
                last_error_at=None,
                blocked_cycle_id=None,
                blocked_reason=None,
                blocked_count=0,
            )

    def delete_finished_marks(self, name: str | None = None) -> int:
        """Delete the marks of closed cycles (they are history; the catalog keeps its marks)."""
        with self._tx() as conn:
            finished = select(m.cycles.c.id).where(m.cycles.c.status != CycleStatus.RUNNING.value)
            if name is not None:
                finished = finished.where(m.cycles.c.provider == name)
            return int(
                conn.execute(delete(m.marks).where(m.marks.c.cycle_id.in_(finished))).rowcount
            )

    # -- reading --------------------------------------------------------------------------

    def provider_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(m.providers.c.name).order_by(m.providers.c.name)))

    def status(self, name: str) -> ProviderStatus:
        with self.engine.begin() as conn:
            now = self.now(conn)
            row = self._lock_provider(conn, name, lock=False)
            current = None
            if row.cycle_id is not None:
                current = _row_dict(
                    conn.execute(select(m.cycles).where(m.cycles.c.id == row.cycle_id)).first()
                )
            if current is not None and current["status"] != CycleStatus.RUNNING.value:
                current = None
            last = _row_dict(
                conn.execute(
                    select(m.cycles)
                    .where(
                        m.cycles.c.provider == name,
                        m.cycles.c.status == CycleStatus.COMPLETED.value,
                    )
                    .order_by(m.cycles.c.id.desc())
                    .limit(1)
                ).first()
            )
            blocked = None
            if row.blocked_reason:
                blocked = {
                    "reason": row.blocked_reason,
                    "count": row.blocked_count,
                    "since_cycle": row.blocked_cycle_id,
                }
            return ProviderStatus(
                name=name,
                action=Action(row.action),
                due_at=row.due_at,
                attempts=row.attempts,
                ticket=row.ticket,
                running=row.lease_owner is not None and row.lease_expires_at >= now,
                lease_owner=row.lease_owner,
                last_error=row.last_error,
                last_error_at=row.last_error_at,
                current_cycle=current,
                last_completed_cycle=last,
                blocked_sweep=blocked,
            )

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def cycles(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The provider's cycles, newest first."""
        c = m.cycles.c
        return self._rows(
            select(m.cycles).where(c.provider == name).order_by(c.id.desc()).limit(limit)
        )

    def marks(
        self, name: str, limit: int = 100, cycle_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The marks (one per committed page) of the provider's cycles, newest first."""
        stmt = (
            select(m.marks)
            .join(m.cycles, m.cycles.c.id == m.marks.c.cycle_id)
            .where(m.cycles.c.provider == name)
            .order_by(m.marks.c.id.desc())
            .limit(limit)
        )
        if cycle_id is not None:
            stmt = stmt.where(m.marks.c.cycle_id == cycle_id)
        return self._rows(stmt)

    def bursts(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The provider's bursts, newest first."""
        b = m.bursts.c
        return self._rows(
            select(m.bursts).where(b.provider == name).order_by(b.id.desc()).limit(limit)
        )

    def errors(
        self,
        name: str,
        *,
        limit: int = 100,
        before: int | None = None,
        kinds: Sequence[ErrorKind] | None = None,
    ) -> list[dict[str, Any]]:
        """Error records, newest first; page with ``before`` = the last id seen."""
        stmt = select(m.errors).where(m.errors.c.provider == name)
        if before is not None:
            stmt = stmt.where(m.errors.c.id < before)
        if kinds:
            stmt = stmt.where(m.errors.c.kind.in_([k.value for k in kinds]))
        return self._rows(stmt.order_by(m.errors.c.id.desc()).limit(limit))

    def entity(self, ref: str) -> dict[str, Any] | None:
        """The catalog row of ``ref`` (any case), or ``None``."""
        rows = self._rows(select(m.entities).where(m.entities.c.ref == ref.lower()))
        return rows[0] if rows else None

    def entities_page(
        self,
        *,
        provider: str | None = None,
        kind: str | None = None,
        after: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Entities in ref order, ``limit`` at a time after the ref ``after`` (keyset)."""
        e = m.entities.c
        stmt = select(m.entities).order_by(e.ref).limit(limit)
        if provider is not None:
            stmt = stmt.where(e.provider == provider)
        if kind is not None:
            stmt = stmt.where(e.ref.startswith(f"{kind.lower()}:", autoescape=True))
        if after is not None:
            stmt = stmt.where(e.ref > after)
        return self._rows(stmt)

    def count_entities(self, provider: str | None = None) -> int:
        stmt = select(func.count()).select_from(m.entities)
        if provider is not None:
            stmt = stmt.where(m.entities.c.provider == provider)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def delete_entities(self, provider: str) -> int:
        """Remove every entity ``provider`` owns, at once (no sweep guard applies)."""
        with self._tx() as conn:
            return int(
                conn.execute(delete(m.entities).where(m.entities.c.provider == provider)).rowcount
            )
