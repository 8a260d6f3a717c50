"""Events between cycles: accepted durably, offered to every provider's hook, applied in order.

Cycles give correctness (a deletion sent while the service was down is found by the next sweep);
events give freshness between them. An event is stored before it is acknowledged
(:meth:`Store.accept_event <ingestion.store.Store.accept_event>`), so one that arrives while no
worker runs waits in the database, and a redelivery with the same delivery id is stored once.
:class:`EventApplier` applies the stored events in the order they were accepted, one at a time
across all workers (it holds a lease while it does), so each provider sees its events in order.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ingestion.errors import ConfigurationError, DatabaseUnavailable, EventRejected, LeaseLost
from ingestion.preparing import prepare_page
from ingestion.provider import (
    EntityIteratorResult,
    Event,
    EventDelta,
    handles_events,
)
from ingestion.store import Store
from ingestion.store.events import Accepted, Lease, ProviderDelta, StoredEvent

log = logging.getLogger("ingestion.events")

#: The lease the event applier holds while it applies events.
APPLIER_LOCK = "event-applier"
#: Events read from the database at a time by the applier (each with its payload).
BATCH = 20
#: The most entities and refs one event may add and remove together.
MAX_DELTA = 10_000
#: The longest ref (``catalog_entities.ref``).
MAX_REF = 512

#: What a topic may be: 1-128 letters, digits, ".", "_" and "-", starting with a letter or digit.
TOPIC_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_TOPIC = re.compile(TOPIC_PATTERN)
# Headers that carry credentials, or a signature that would let someone replay the request:
# never stored, never passed to a provider.
_SECRET_HEADER = re.compile(
    r"authorization|cookie|signature|token|secret|api[-_]?key|password|credential|session"
    r"|jwt|assertion|oidc|hmac",
    re.I,
)
#: Headers a delivery id is read from, in order (GitHub's first).
DELIVERY_HEADERS = ("x-github-delivery", "x-delivery-id", "idempotency-key")


def check_topic(topic: str) -> str:
    """``topic`` if it is usable; :class:`ConfigurationError` saying what is accepted if not."""
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise ConfigurationError(
            f"event topic {topic!r}: use 1-128 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return topic


def clean_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers worth keeping with an event: lower-case names, credentials and signatures
    dropped."""
    return {
        str(k).lower(): str(v)
        for k, v in (headers or {}).items()
        if not _SECRET_HEADER.search(str(k))
    }


def delivery_id_of(headers: Mapping[str, str]) -> str | None:
    """The delivery id a sender put in the headers (lower-case names), if any."""
    for name in DELIVERY_HEADERS:
        value = headers.get(name)
        if value:
            return value[:255]
    return None


class EventApplier:
    """Offers stored events to the providers that take events, and applies what they return."""

    def __init__(self, store: Store, providers: Mapping[str, Any], *, lease: timedelta) -> None:
        self.store = store
        self.providers = providers  # name -> ingestion.engine.Registered
        self.lease = lease

    def accept(
        self,
        topic: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        delivery_id: str | None = None,
    ) -> Accepted:
        """Store one event; a delivery id stored before is not stored again."""
        kept = clean_headers(headers)
        delivery = delivery_id or delivery_id_of(kept) or str(uuid.uuid4())
        return self.store.accept_event(
            topic=check_topic(topic), payload=payload, headers=kept, delivery_id=delivery[:255]
        )

    def apply_pending(self, owner: str) -> int:
        """Apply every stored event not applied yet, oldest first; how many were applied.

        Returns at once when another worker holds the applier's lease: it applies them. An
        event the database refuses (a value too long for a column, say) is marked ``failed``
        with the reason, and the next one is applied: one bad event does not hold up the rest.
        """
        lease = Lease(APPLIER_LOCK, f"{owner}/{uuid.uuid4().hex[:12]}", self.lease)
        applied = 0
        while True:
            if not self.store.take_lock(lease.name, lease.owner, lease.ttl):
                return applied
            try:
                applied += self._apply_all(lease)
            except LeaseLost as exc:
                log.warning("event applier stopped: %s; another worker goes on", exc)
                return applied
            finally:
                self.store.release_lock(lease.name, lease.owner)
            # An event accepted while the lease was about to be released was announced to
            # an applier that found the lease held: look once more.
            if not self.store.pending_events(1):
                return applied

    def _apply_all(self, lease: Lease) -> int:
        applied = 0
        while True:
            batch = self.store.pending_events(BATCH)
            for stored in batch:
                deltas, results = self.offer(stored)
                try:
                    done = self.store.apply_event(stored, deltas, results, lease)
                except DatabaseUnavailable:
                    raise  # the event stays pending; the next run applies it
                except SQLAlchemyError as exc:
                    reason = str(getattr(exc, "orig", None) or exc).split("\n", 1)[0][:300]
                    log.error("event %s could not be applied: %s", stored.id, reason)
                    self.store.fail_event(stored.id, reason)
                    continue
                if done is None:
                    continue  # applied by another worker meanwhile
                applied += 1
                log.info(
                    "event %s (%s, delivery %s): %s",
                    stored.id,
                    stored.topic,
                    stored.delivery_id,
                    "; ".join(f"{k}: {v}" for k, v in sorted(done.results.items()))
                    or "no provider took it",
                )
            if len(batch) < BATCH:
                return applied

    def offer(self, stored: StoredEvent) -> tuple[dict[str, ProviderDelta], dict[str, str]]:
        """Each provider's delta for ``stored``, prepared; and a word per provider that took
        it but could not apply it."""
        event = Event(stored.topic, stored.payload, stored.headers, stored.delivery_id)
        deltas: dict[str, ProviderDelta] = {}
        results: dict[str, str] = {}
        for name, registered in sorted(self.providers.items()):
            provider = registered.provider
            if not handles_events(provider):
                continue
            where = f"provider {name!r}, event {stored.id} ({stored.topic})"
            try:
                delta = provider.on_event(event)
                if delta is None:
                    continue
                deltas[name] = _prepare(name, delta, where)
            except EventRejected as exc:
                log.warning("%s: event rejected: %s", where, exc)
                results[name] = f"rejected: {exc}"
            except Exception as exc:
                log.exception("%s: on_event failed", where)
                results[name] = f"failed: {type(exc).__name__}: {exc}"[:500]
        return deltas, results


def _prepare(name: str, delta: object, where: str) -> ProviderDelta:
    """A provider's delta checked and prepared; :class:`EventRejected` says what is wrong."""
    if not isinstance(delta, EventDelta):
        raise EventRejected(
            f"on_event returned {type(delta).__name__}, expected EventDelta or None"
        )
    added, removed = delta.added, delta.removed
    if isinstance(added, (str, bytes, Mapping)) or not isinstance(added, Sequence):
        raise EventRejected(f"EventDelta.added must be a list, got {type(added).__name__}")
    if isinstance(removed, (str, bytes)) or not isinstance(removed, Sequence):
        raise EventRejected(f"EventDelta.removed must be a list, got {type(removed).__name__}")
    if len(added) + len(removed) > MAX_DELTA:
        raise EventRejected(
            f"the delta holds {len(added) + len(removed)} entities and refs; "
            f"{MAX_DELTA} at most (a cycle reads larger changes)"
        )
    refs: list[str] = []
    for position, ref in enumerate(removed):
        if not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
            raise EventRejected(
                f"EventDelta.removed[{position}] must be a ref of 1-{MAX_REF} characters, "
                f"got {str(ref)[:80]!r}"
            )
        refs.append(ref.lower())
    page = prepare_page(name, EntityIteratorResult(done=False, entities=added), 0, where=where)
    return ProviderDelta(page, refs)
