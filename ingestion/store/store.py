"""The store: the one door to the database. Each public method is one transaction.

The SQL lives in the modules named for each job, which run inside the transaction a method
here opens:

- :mod:`~ingestion.store.database`: the SQLAlchemy engine, transactions, the clock;
- :mod:`~ingestion.store.dialects`: what statements say differently per database;
- :mod:`~ingestion.store.schedule`: which step is due, claims, the end of a burst;
- :mod:`~ingestion.store.pages`: a page's entities, marks, checkpoint and counters;
- :mod:`~ingestion.store.sweep`: removing what a completed cycle did not mark;
- :mod:`~ingestion.store.operator`: trigger, start, cancel, reset, trimming history;
- :mod:`~ingestion.store.reads` and :mod:`~ingestion.store.stats`: what operators read;
- :mod:`~ingestion.store.transitions`: writing what :mod:`ingestion.state` decides.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ingestion.options import ProviderOptions
from ingestion.provider import RemovalCandidate
from ingestion.store import (
    changes,
    events,
    operator,
    pages,
    reads,
    schedule,
    sweep,
    transitions,
)
from ingestion.store.database import IDLE_IN_TRANSACTION_SECONDS, Database
from ingestion.store.records import (
    CheckBatch,
    CheckCommit,
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


class Store:
    """State and catalog of an ingestion, in Postgres or SQLite."""

    def __init__(
        self,
        url: str,
        *,
        database: Database | None = None,
        idle_in_transaction: float | None = IDLE_IN_TRANSACTION_SECONDS,
    ) -> None:
        self.db = database or Database(url, idle_in_transaction=idle_in_transaction)
        self.entity_writer = pages.entity_writer_for(self.db)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def dialect(self) -> str:
        return self.db.dialect

    # -- set-up ---------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic."""
        self.db.migrate(revision)

    def dispose(self, *, close: bool = True) -> None:
        self.db.dispose(close=close)

    # -- schedule and claims --------------------------------------------------------------

    def ensure_providers(self, names: Iterable[str]) -> list[str]:
        """Give every provider a row; a new one is due to begin a cycle now."""
        with self.db.write() as tx:
            return schedule.ensure_providers(self.db, tx, names)

    def due_steps(
        self,
        names: Collection[str],
        *,
        resend_after: timedelta,
        limit: int = 1000,
        registered: bool = False,
        queued: int = 0,
        lease: timedelta | None = None,
    ) -> list[Doorbell]:
        """Steps that are due, held by no live lease, and not announced in ``resend_after``
        (``registered``, ``queued``, ``lease``: see :func:`schedule.due_steps`)."""
        with self.db.write() as tx:
            return schedule.due_steps(
                tx,
                names,
                resend_after=resend_after,
                limit=limit,
                registered=registered,
                queued=queued,
                lease=lease,
            )

    def claim(
        self, name: str, ticket: int, owner: str, lease: timedelta, options: ProviderOptions
    ) -> Claim | Skip | LostBurst:
        """Take the provider for one burst, if the message's step is still the pending one."""
        with self.db.write() as tx:
            return schedule.claim(tx, name, ticket, owner, lease, options)

    def commit_page(
        self,
        claim: Claim,
        page: Page,
        sequence: int,
        lease: timedelta,
        *,
        expect_unchanged: bool = True,
    ) -> PageCommit:
        """Upsert the page's entities, mark them, record the checkpoint and cursor."""
        with self.db.write() as tx:
            return pages.commit_page(
                tx,
                self.entity_writer,
                claim,
                page,
                sequence,
                lease,
                expect_unchanged=expect_unchanged,
            )

    def removal_candidates(
        self, claim: Claim, options: ProviderOptions, *, after: str | None, limit: int
    ) -> list[RemovalCandidate]:
        """The next removal candidates of ``claim``'s cycle, in ref order after ``after``."""
        with self.db.read() as conn:
            return sweep.removal_candidates(conn, claim, options, after=after, limit=limit)

    def commit_check(self, claim: Claim, batch: CheckBatch, lease: timedelta) -> CheckCommit:
        """Commit what the source said about one batch of removal candidates."""
        with self.db.write() as tx:
            return pages.commit_check(tx, self.entity_writer, claim, batch, lease)

    def renew_lease(self, claim: Claim, lease: timedelta) -> bool:
        """Extend a running burst's lease (its heartbeat); whether it still holds its step."""
        with self.db.write() as tx:
            return transitions.renew_lease(tx, claim, lease)

    def finish_burst(
        self,
        claim: Claim,
        *,
        done: bool,
        lease: timedelta,
        options: ProviderOptions,
        checks_removals: bool = False,
    ) -> tuple[Doorbell, SweepResult | None]:
        """Close the burst: schedule the next one; or begin the checking phase; or sweep,
        complete the cycle and rest."""
        with self.db.write() as tx:
            return schedule.finish_burst(
                tx, claim, done=done, lease=lease, options=options, checks_removals=checks_removals
            )

    def fail_burst(
        self,
        claim: Claim,
        message: str,
        options: ProviderOptions,
        *,
        page: int | None = None,
        problems: Sequence[Problem] = (),
    ) -> Doorbell | None:
        """Record a failed burst and schedule the backoff; ``None`` if the step was replaced."""
        with self.db.write() as tx:
            return schedule.fail_burst(tx, claim, message, options, page=page, problems=problems)

    def database_failure(
        self, claim: Claim, message: str, retry_in: timedelta, *, page: int | None = None
    ) -> Doorbell | None:
        """Record a database failure under a burst (once the database answers again); the
        step runs again after ``retry_in``. ``None`` if the step was replaced."""
        with self.db.write() as tx:
            return schedule.database_failure(tx, claim, message, retry_in, page=page)

    def park_burst(self, claim: Claim, message: str, *, page: int | None = None) -> Doorbell | None:
        """The source refused for good: park the provider until an operator starts it."""
        with self.db.write() as tx:
            return schedule.park_burst(tx, claim, message, page=page)

    def wait_burst(self, claim: Claim, wait: timedelta, reason: str) -> Doorbell | None:
        """Record a burst the source paused; its step runs again after ``wait``."""
        with self.db.write() as tx:
            return schedule.wait_burst(tx, claim, wait, reason)

    # -- operator steps -------------------------------------------------------------------

    def trigger(self, name: str) -> Doorbell:
        """Make the pending step due now (a running burst is left alone)."""
        with self.db.write() as tx:
            return operator.trigger(tx, name)

    def start(self, name: str) -> Doorbell:
        """Cancel the open cycle (if any) and begin a new one now."""
        with self.db.write() as tx:
            return operator.start(tx, name)

    def cancel(self, name: str, options: ProviderOptions) -> Doorbell:
        """Cancel the open cycle without sweeping; the provider rests."""
        with self.db.write() as tx:
            return operator.cancel(tx, name, options)

    def reset(self, name: str) -> Doorbell:
        """Forget the provider's ingestion records; it begins afresh now. Entities stay."""
        with self.db.write() as tx:
            return operator.reset(tx, name)

    def approve_held_removals(self, name: str) -> int:
        """Remove the entities a guard held back, now, and clear the block; how many went."""
        with self.db.write() as tx:
            return sweep.approve_held(tx, name)

    def dismiss_held_removals(self, name: str) -> int:
        """Keep the entities a guard held back and clear the block; how many were kept."""
        with self.db.write() as tx:
            return sweep.dismiss_held(tx, name)

    def delete_closed_checkpoints(self, name: str | None = None) -> int:
        """Delete the checkpoints of closed cycles (of one provider, or of all)."""
        with self.db.write() as tx:
            return operator.delete_closed_checkpoints(tx, name)

    def delete_entities(self, provider: str) -> int:
        """Remove every entity ``provider`` owns, at once (no sweep guard applies)."""
        with self.db.write() as tx:
            return operator.delete_entities(tx, provider)

    # -- reads ----------------------------------------------------------------------------

    def provider_names(self) -> list[str]:
        with self.db.read() as conn:
            return reads.provider_names(conn)

    def status(self, name: str, options: ProviderOptions | None = None) -> ProviderStatus:
        """Where a provider stands; :class:`~ingestion.errors.UnknownProvider` if it has no row.

        With the provider's ``options``, the removals kept by ``remove_after_missed_cycles``
        are counted too."""
        missed = options.remove_after_missed_cycles if options is not None else 1
        with self.db.read() as conn:
            return reads.status(conn, name, self.db.now(conn), missed_cycles=missed)

    def held_removals(
        self, name: str, *, after: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The entities a guard holds back from removal, in ref order."""
        with self.db.read() as conn:
            return reads.held_removals(conn, name, after=after, limit=limit)

    def waiting_removals(
        self, name: str, options: ProviderOptions, *, after: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Entities missing from the last completed cycle, kept by remove_after_missed_cycles."""
        with self.db.read() as conn:
            return reads.waiting_removals(
                conn, name, options.remove_after_missed_cycles, after=after, limit=limit
            )

    def cycles(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The provider's cycles, newest first."""
        with self.db.read() as conn:
            return reads.cycles(conn, name, limit)

    def cycle(self, name: str, cycle_id: int) -> dict[str, Any] | None:
        """One cycle of the provider, or ``None``."""
        with self.db.read() as conn:
            return reads.cycle(conn, name, cycle_id)

    def checkpoints(
        self, name: str, limit: int = 100, cycle_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The checkpoints (one per committed page) of the provider's cycles, newest first."""
        with self.db.read() as conn:
            return reads.checkpoints(conn, name, limit, cycle_id)

    def bursts(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The provider's bursts, newest first."""
        with self.db.read() as conn:
            return reads.bursts(conn, name, limit)

    def errors(
        self,
        name: str,
        *,
        limit: int = 100,
        before: int | None = None,
        kinds: Sequence[ErrorKind] | None = None,
        rule: str | None = None,
    ) -> list[dict[str, Any]]:
        """Error records, newest first; page with ``before`` = the last id seen."""
        with self.db.read() as conn:
            return reads.errors(conn, name, limit=limit, before=before, kinds=kinds, rule=rule)

    def error_rules(self, name: str) -> dict[str, int]:
        """The rules the provider's error records name, with how many records name each."""
        with self.db.read() as conn:
            return reads.error_rules(conn, name)

    def entity(self, ref: str) -> dict[str, Any] | None:
        """The catalog row of ``ref`` (any case), or ``None``."""
        with self.db.read() as conn:
            return reads.entity(conn, ref)

    def entities_page(
        self,
        *,
        provider: str | None = None,
        kind: str | None = None,
        after: str | None = None,
        limit: int = 500,
        contains: str | None = None,
    ) -> list[dict[str, Any]]:
        """Entities in ref order, ``limit`` at a time after the ref ``after`` (keyset);
        ``contains`` keeps the refs holding that fragment."""
        with self.db.read() as conn:
            return reads.entities_page(
                conn, provider=provider, kind=kind, after=after, limit=limit, contains=contains
            )

    def count_entities(self, provider: str | None = None) -> int:
        with self.db.read() as conn:
            return reads.count_entities(conn, provider)

    # -- events ---------------------------------------------------------------------------

    def accept_event(
        self, *, topic: str, payload: Any, headers: Mapping[str, str], delivery_id: str
    ) -> events.Accepted:
        """Store an event before it is acknowledged; a stored delivery id is not stored again."""
        with self.db.write() as tx:
            return events.accept(
                self.db, tx, topic=topic, payload=payload, headers=headers, delivery_id=delivery_id
            )

    def pending_events(self, limit: int = 100) -> list[events.StoredEvent]:
        with self.db.read() as conn:
            return events.pending(conn, limit)

    def oldest_pending_event(self) -> datetime | None:
        with self.db.read() as conn:
            return events.oldest_pending(conn)

    def recent_events(
        self, *, limit: int = 50, before: int | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored events, newest first (payloads left out); page with ``before``."""
        with self.db.read() as conn:
            return events.recent(conn, limit=limit, before=before, status=status)

    def event(self, event_id: int) -> dict[str, Any] | None:
        with self.db.read() as conn:
            return events.get(conn, event_id)

    def apply_event(
        self,
        event: events.StoredEvent,
        deltas: Mapping[str, events.ProviderDelta],
        results: Mapping[str, str],
        lease: events.Lease,
    ) -> events.Applied | None:
        """Apply one event to the providers' entities, in one transaction, if ``lease`` is
        still held and the event still pending (``None`` if it is not pending)."""
        with self.db.write() as tx:
            return events.apply(tx, self.entity_writer, event, deltas, results, lease)

    def fail_event(self, event_id: int, reason: str) -> None:
        """Mark an event the database refused to apply as failed, with the reason."""
        with self.db.write() as tx:
            events.fail(tx, event_id, reason)

    def last_event_id(self, provider: str) -> int:
        with self.db.read() as conn:
            return events.last_event_id(conn, provider)

    def take_lock(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew the named lease; whether ``owner`` holds it now."""
        with self.db.write() as tx:
            return events.take_lock(self.db, tx, name, owner, ttl)

    def release_lock(self, name: str, owner: str) -> None:
        with self.db.write() as tx:
            events.release_lock(tx, name, owner)

    # -- the change feed ------------------------------------------------------------------

    def changes(self, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` changes of the catalog with an id above ``after``, in id order."""
        with self.db.read() as conn:
            return changes.read(conn, after=after, limit=limit)

    def last_change_id(self) -> int:
        with self.db.read() as conn:
            return changes.last_id(conn)

    def prune_history(
        self,
        *,
        changes_older_than: timedelta | None,
        events_older_than: timedelta | None,
        limit: int,
    ) -> tuple[int, int]:
        """Delete up to ``limit`` changes and applied events older than the given ages, by
        the database's clock (``None``: keep them)."""
        with self.db.write() as tx:
            pruned = (
                changes.prune(tx, before=tx.now - changes_older_than, limit=limit)
                if changes_older_than is not None
                else 0,
                events.prune(tx, before=tx.now - events_older_than, limit=limit)
                if events_older_than is not None
                else 0,
            )
        return pruned
