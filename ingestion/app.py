"""``IncrementalIngestion``: the registry of providers, its store and its Celery app."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from pydantic import ValidationError

from ingestion.catalog import Catalog
from ingestion.engine import BurstReport, Engine, ProgressCallback, Registered
from ingestion.errors import ConfigurationError, ProviderConfigError, UnknownProvider
from ingestion.events import EventApplier
from ingestion.options import ProviderOptions
from ingestion.provider import IncrementalEntityProvider
from ingestion.settings import (
    Settings,
    celery_config,
    changes_queue,
    control_queue,
    prepare_broker,
)
from ingestion.state import BurstOutcome
from ingestion.store import Doorbell, ErrorKind, Store
from ingestion.store.changes import Batch
from ingestion.store.events import Accepted
from ingestion.tasks import APPLY_EVENTS, BURST, RECONCILE, register_tasks

#: The GIL's switch interval in a pool process, in seconds (Python's default is 0.005). While
#: a burst's committer thread commits one page, the burst's own thread prepares the next and
#: holds the GIL; after each statement the committer waits for it until the interval runs out.
#: A shorter interval gives it back sooner, which matters most to an unchanged cycle, whose
#: commits are short statements (docs/benchmarks.md, change 10).
POOL_SWITCH_INTERVAL = 0.0005

log = logging.getLogger("ingestion")

#: How many announcements of one reconciler tick are logged by name.
LOGGED_ANNOUNCEMENTS = 10
#: How long the event applier holds its lease without renewing it (it renews per batch).
EVENT_LEASE_SECONDS = 60.0
#: The most changes (and applied events) one reconciler tick prunes.
PRUNE_BATCH = 10_000
#: Seconds between two prunings of history by the reconciler of one process.
PRUNE_EVERY = 60.0
#: The longest one pruning goes on (it stops sooner when nothing is left past retention).
PRUNE_SECONDS = 2.0


class IncrementalIngestion:
    """Providers, the state and catalog database, and the Celery app that runs their bursts.

    ``database_url`` and ``broker_url`` override ``INGESTION_DATABASE_URL`` and
    ``CELERY_BROKER_URL``; any other setting may be given as a :class:`Settings`.
    """

    def __init__(
        self,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        settings: Settings | None = None,
        app_name: str = "ingestion",
    ) -> None:
        overrides: dict[str, Any] = {}
        if database_url is not None:
            overrides["database_url"] = database_url
        if broker_url is not None:
            overrides["broker_url"] = broker_url
        try:
            base = settings or Settings()
        except ValidationError as exc:
            problems = "; ".join(
                f"INGESTION_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise ConfigurationError(f"invalid setting {problems}") from None
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.providers: dict[str, Registered] = {}
        self._store: Store | None = None
        self._engine: Engine | None = None
        self._events: EventApplier | None = None
        # History is pruned by the first reconciler tick, then every PRUNE_EVERY seconds.
        self._next_prune = 0.0
        self.observers: list[ProgressCallback] = []
        self.celery_app = Celery(app_name)
        self.celery_app.config_from_object(celery_config(self.settings))
        self.tasks = register_tasks(self.celery_app, self)
        self._connect_signals()
        self._broker_ready = False
        self._registered = False

    # -- registry -------------------------------------------------------------------------

    def add_provider(self, provider: IncrementalEntityProvider[Any, Any], **options: Any) -> None:
        """Register ``provider`` with its engine options.

        The options are the fields of :class:`~ingestion.options.ProviderOptions` (durations as
        timedeltas, seconds or text such as ``3s``); those the provider suggests in
        ``default_options()`` apply unless given here. A provider's first cycle begins by
        itself once a worker runs.
        """
        if not isinstance(provider, IncrementalEntityProvider):
            raise ProviderConfigError(
                f"add_provider expects an IncrementalEntityProvider, got {type(provider).__name__}"
            )
        name = provider.get_provider_name()
        if not isinstance(name, str) or not name.strip():
            raise ProviderConfigError(
                f"provider {type(provider).__name__}: get_provider_name() must return a "
                f"non-empty string, got {name!r}"
            )
        if len(name) > 255:
            raise ProviderConfigError(
                f"provider {name[:40]!r}...: a name has 255 characters at most"
            )
        if name in self.providers:
            raise ProviderConfigError(f"provider {name!r}: a provider of that name is registered")
        # What this kind of provider needs (say, grace cycles for paging that can skip items),
        # unless the caller says otherwise.
        options = {**provider.default_options(), **options}
        self.providers[name] = Registered(provider, ProviderOptions.build(name, options))

    def registered(self, name: str) -> Registered:
        """The provider ``name`` and its options; :class:`UnknownProvider` if not registered."""
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise UnknownProvider(
                f"no provider named {name!r} is registered (known: {known})"
            ) from None

    # -- parts ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(
                self.settings.database_url, idle_in_transaction=self.settings.lease_seconds
            )
            if self.settings.changes_task:
                self._store.db.change_listeners.append(self._push_changes)
        return self._store

    @property
    def events(self) -> EventApplier:
        if self._events is None:
            self._events = EventApplier(
                self.store, self.providers, lease=timedelta(seconds=EVENT_LEASE_SECONDS)
            )
        return self._events

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(
                self.store,
                self.providers,
                page_timeout=self.settings.page_timeout,
                time_limit_grace=self.settings.time_limit_grace,
                lease_seconds=self.settings.lease_seconds,
            )
        return self._engine

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store)

    def migrate(self) -> None:
        """Create or upgrade the schema (Alembic)."""
        self.store.migrate()

    def errors(
        self, provider: str, *, limit: int = 100, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """The provider's error records, newest first."""
        kinds = [ErrorKind(kind)] if kind else None
        return self.store.errors(provider, limit=limit, kinds=kinds)

    # -- scheduling -----------------------------------------------------------------------

    def ring(self, doorbell: Doorbell, *, producer: Any = None, declared: bool = False) -> bool:
        """Announce a recorded step to the workers; a far one is left to the reconciler.

        ``producer`` (from ``celery_app.producer_or_acquire()``) sends many on one connection;
        ``declared``: the caller declared the queue on it already.
        """
        if doorbell.countdown > self.settings.max_countdown:
            return False
        if not self._broker_ready:
            prepare_broker(self.settings)
            self._broker_ready = True
        name = doorbell.provider
        soft, hard = self.engine.time_limits(name) if name in self.providers else (None, None)
        try:
            kwargs = {
                "provider": name,
                "ticket": doorbell.ticket,
                "cycle": doorbell.cycle_id,
                "burst": doorbell.burst,
            }
            self.tasks[BURST].apply_async(
                kwargs=kwargs,
                # What Flower shows; plain values, so repr() says what Celery's saferepr would.
                argsrepr="()",
                kwargsrepr=repr(kwargs),
                declare=[] if declared else None,
                countdown=doorbell.countdown,
                shadow=f"{BURST}[{name}]",
                soft_time_limit=soft,
                time_limit=hard,
                queue=self.settings.queue,
                producer=producer,
            )
        except Exception:
            # The step is in the database: the reconciler announces it when the broker is back.
            log.exception("could not send the next step of %s; the reconciler will", name)
            return False
        return True

    def register_providers(self) -> list[str]:
        """Give every registered provider its row in the database (a new one is due at once).

        A worker does it when it starts, and the first reconcile of a process that has not; a
        provider added to a running deployment is registered when a worker restarts with it.
        Returns the names that were new.
        """
        created = self.store.ensure_providers(self.providers)
        self._registered = True
        return created

    def queue_depth(self) -> int | None:
        """Messages waiting in the burst queue; ``None`` if the broker cannot say."""
        if not self._broker_ready:
            prepare_broker(self.settings)
            self._broker_ready = True
        try:
            with self.celery_app.connection_for_write() as conn:
                declared = conn.default_channel.queue_declare(
                    queue=self.settings.queue, passive=True
                )
            return int(declared.message_count)
        except Exception as exc:  # a queue nobody declared yet, or a broker away
            log.debug("could not read the depth of queue %s: %s", self.settings.queue, exc)
            return None

    def reconcile(self) -> list[Doorbell]:
        """Announce every due step that no worker holds, while the burst queue has room.

        Registers the providers first if this process has not. The steps go out on one broker
        connection, ``max_announce`` at most; steps whose messages may still wait in the burst
        queue (as many as it holds, the most recently announced) are not announced again.
        """
        if not self._registered:
            self.register_providers()
        try:
            return self._announce_due()
        finally:
            # After the due steps, and never in their way.
            try:
                self._tend_events_and_history()
            except Exception as exc:
                log.warning("reconciler: events and history not tended this tick: %s", exc)

    def _announce_due(self) -> list[Doorbell]:
        depth = self.queue_depth() or 0
        # Not the room left in the queue: it also holds messages with a countdown (a rest
        # ending soon) that no worker may run yet, and they must not hold back first cycles.
        limit = self.settings.max_announce
        # Providers known to the database but not registered here are left alone.
        due = self.store.due_steps(
            self.providers,
            resend_after=timedelta(seconds=self.settings.resend_after),
            limit=limit,
            registered=True,
            queued=depth,
            lease=timedelta(seconds=self.settings.lease_seconds),
        )
        if not due:
            return due
        sent = self._announce(due)
        # Each by name while they are few (a lost message, a rest ended); a summary at scale.
        for doorbell in due[:LOGGED_ANNOUNCEMENTS]:
            log.info(
                "reconciler: announcing %s ticket %s (%s)",
                doorbell.provider,
                doorbell.ticket,
                doorbell.action.value,
            )
        log.info(
            "reconciler: announced %d due step(s) (%d sent now, the rest due later); "
            "%d message(s) were waiting",
            len(due),
            sent,
            depth,
        )
        return due

    def _announce(self, due: list[Doorbell]) -> int:
        """Send ``due`` on one producer, in one Redis pipeline where kombu can batch; how many
        went out (the others are announced again by a later tick)."""
        try:
            with self.celery_app.producer_or_acquire() as producer:
                batch = getattr(producer, "batch", None)  # kombu >= 5.7
                producer.maybe_declare(self.celery_app.amqp.queues[self.settings.queue])
                with batch() if batch is not None else nullcontext():
                    return sum(
                        self.ring(doorbell, producer=producer, declared=True) for doorbell in due
                    )
        except Exception:
            log.exception("could not announce %d due step(s); a later tick will", len(due))
            return 0

    # -- events and the change feed -------------------------------------------------------

    def accept_event(
        self,
        topic: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        delivery_id: str | None = None,
        announce: bool = True,
    ) -> Accepted:
        """Store an event from a source; it is applied by a worker soon after.

        The event is in the database when this returns (a redelivery with the same
        ``delivery_id`` is stored once). ``announce`` sends the task that applies it; if the
        broker is away, the reconciler sends it once a worker runs.
        """
        accepted = self.events.accept(topic, payload, headers=headers, delivery_id=delivery_id)
        if announce and not accepted.duplicate:
            self._announce_events()
        return accepted

    def apply_events(self, owner: str | None = None) -> int:
        """Apply the stored events not applied yet, in order; how many this call applied."""
        return self.events.apply_pending(owner or f"{socket.gethostname()}/{os.getpid()}")

    def _announce_events(self) -> None:
        if not self._broker_ready:
            prepare_broker(self.settings)
            self._broker_ready = True
        try:
            self.tasks[APPLY_EVENTS].apply_async(queue=control_queue(self.settings))
        except Exception as exc:
            log.warning("could not ask a worker to apply events (the reconciler will): %s", exc)

    def _tend_events_and_history(self) -> None:
        """A reconciler tick's other work: events waiting (a worker was away when they came,
        or the broker was) are announced; and on a process's first tick, then once a minute,
        history past its retention is pruned, ``PRUNE_BATCH`` rows of each a transaction, for
        ``PRUNE_SECONDS`` at most."""
        if self.store.oldest_pending_event() is not None:
            self._announce_events()
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY
        stop = time.monotonic() + PRUNE_SECONDS
        changes = events = 0
        while True:
            pruned = self.store.prune_history(
                changes_older_than=self.settings.changes_retention,
                events_older_than=self.settings.events_retention,
                limit=PRUNE_BATCH,
            )
            changes, events = changes + pruned[0], events + pruned[1]
            if max(pruned) < PRUNE_BATCH or time.monotonic() >= stop:
                break
        if changes or events:
            log.info("pruned %d change(s) and %d applied event(s) past retention", changes, events)

    def _push_changes(self, batch: Batch) -> None:
        """Send ``changes_task`` for one committed batch of changes (a listener of the store)."""
        assert self.settings.changes_task is not None
        if not self._broker_ready:
            prepare_broker(self.settings)
            self._broker_ready = True
        self.celery_app.send_task(
            self.settings.changes_task,
            kwargs={
                "first": batch.first,
                "last": batch.last,
                "count": batch.count,
                "providers": list(batch.providers),
            },
            queue=changes_queue(self.settings),
        )

    def _known(self, name: str) -> Registered:
        registered = self.registered(name)
        self.store.ensure_providers([name])
        return registered

    def trigger(self, name: str) -> Doorbell:
        """Run the provider's pending step now."""
        self._known(name)
        doorbell = self.store.trigger(name)
        self.ring(doorbell)
        return doorbell

    def start(self, name: str) -> Doorbell:
        """End the rest or cancel the open cycle, and begin a new cycle now."""
        self._known(name)
        doorbell = self.store.start(name)
        self.ring(doorbell)
        return doorbell

    def cancel(self, name: str) -> Doorbell:
        """Cancel the open cycle (no sweep); the provider rests until started."""
        doorbell = self.store.cancel(name, self._known(name).options)
        self.ring(doorbell)
        return doorbell

    def reset(self, name: str) -> Doorbell:
        """Purge the provider's ingestion records and begin afresh; entities stay."""
        self._known(name)
        doorbell = self.store.reset(name)
        self.ring(doorbell)
        return doorbell

    def observe(self, report: BurstReport) -> None:
        for observer in self.observers:
            observer(report)

    # -- in the foreground ----------------------------------------------------------------

    def run_cycle(
        self, name: str, *, progress: ProgressCallback | None = None, max_bursts: int = 100_000
    ) -> list[BurstReport]:
        """Run one whole cycle of ``name`` in this process, waiting out intervals and backoffs.

        For development and demos: no broker and no worker are involved. Returns the reports
        of its bursts; the last one is ``done``, or the cycle was cancelled.
        """
        self._known(name)
        doorbell = self.store.start(name)
        cycle_id: int | None = None
        owner = f"foreground/{os.getpid()}"
        reports: list[BurstReport] = []
        for _ in range(max_bursts):
            time.sleep(doorbell.countdown)
            report = self.engine.run_step(name, doorbell.ticket, owner, progress)
            reports.append(report)
            self.observe(report)
            cycle_id = cycle_id or report.cycle_id
            if report.outcome is BurstOutcome.DONE or report.next is None:
                break
            if report.next.cycle_id != cycle_id:
                break  # the cycle was cancelled after its last backoff step
            doorbell = report.next
        return reports

    # -- worker wiring --------------------------------------------------------------------

    def _connect_signals(self) -> None:
        # Weak references: an ingestion no one holds any more (one a test made, say) is
        # forgotten by Celery's signals too, and its database connections close with it.
        worker_init.connect(self._on_worker_init, weak=True)
        worker_process_init.connect(self._on_process_init, weak=True)
        worker_ready.connect(self._on_worker_ready, weak=True)

    def _ours(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.celery_app

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        prepare_broker(self.settings)
        if self.settings.auto_migrate:
            self.migrate()
        try:
            # Once per worker start, before the pool forks: its processes inherit that the
            # providers are registered, and no reconcile tick repeats it.
            self.register_providers()
        except Exception as exc:
            log.warning("could not register the providers yet (the reconciler will): %s", exc)
        if self._store is not None:
            self._store.dispose()  # no connection crosses the fork into the pool

    def _on_process_init(self, **_: Any) -> None:
        if self._store is not None:
            self._store.dispose(close=False)
        # What a pool process inherits lives as long as it does: keep it out of the
        # collector's full passes, which otherwise scan all of it every few pages.
        gc.freeze()
        sys.setswitchinterval(POOL_SWITCH_INTERVAL)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.tasks[RECONCILE].apply_async(queue=control_queue(self.settings))

    def close(self) -> None:
        """Close the database connections this ingestion holds (a worker never needs to)."""
        if self._store is not None:
            self._store.dispose()


def __getattr__(name: str) -> Any:
    if name in ("app", "celery", "ingestion"):
        # Before the ready providers moved out of the engine, ``celery -A ingestion.app``
        # loaded the configuration file; say where that went.
        raise AttributeError(
            "ingestion.app is the engine's module, not an app: for the providers of a "
            "configuration file use 'INGESTION_CONFIG=<file> celery -A providers.app', or give "
            "celery -A the module that builds your IncrementalIngestion"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
