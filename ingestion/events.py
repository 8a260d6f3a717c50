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
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ingestion.errors import ConfigurationError, EventRejected
from ingestion.preparing import prepare_page
from ingestion.provider import (
    EntityIteratorResult,
    Event,
    EventDelta,
    handles_events,
)
from ingestion.store import Store
from ingestion.store.events import Accepted, ProviderDelta, StoredEvent

log = logging.getLogger("ingestion.events")

#: The lease the event applier holds while it applies events.
APPLIER_LOCK = "event-applier"
#: Events read from the database at a time by the applier.
BATCH = 100

_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Headers that carry credentials, or a signature that would let someone replay the request:
# never stored, never passed to a provider.
_SECRET_HEADER = re.compile(r"authorization|cookie|signature|token|secret|api[-_]?key", re.I)
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

        Returns 0 at once when another worker holds the applier's lease: it applies them.
        """
        if not self.store.take_lock(APPLIER_LOCK, owner, self.lease):
            return 0
        applied = 0
        try:
            while True:
                batch = self.store.pending_events(BATCH)
                for stored in batch:
                    deltas, results = self.offer(stored)
                    done = self.store.apply_event(stored, deltas, results)
                    applied += 1
                    log.info(
                        "event %s (%s, delivery %s): %s",
                        stored.id,
                        stored.topic,
                        stored.delivery_id,
                        "; ".join(f"{k}: {v}" for k, v in sorted(done.results.items()))
                        or "no provider took it",
                    )
                if len(batch) < BATCH or not self.store.take_lock(APPLIER_LOCK, owner, self.lease):
                    return applied
        finally:
            self.store.release_lock(APPLIER_LOCK, owner)

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
            except EventRejected as exc:
                log.warning("%s: event rejected: %s", where, exc)
                results[name] = f"rejected: {exc}"
                continue
            except Exception as exc:
                log.exception("%s: on_event failed", where)
                results[name] = f"failed: {type(exc).__name__}: {exc}"[:500]
                continue
            if delta is None:
                continue
            if not isinstance(delta, EventDelta):
                results[name] = (
                    f"failed: on_event returned {type(delta).__name__}, expected EventDelta or None"
                )
                continue
            removed = [ref.lower() for ref in delta.removed if isinstance(ref, str)]
            page = prepare_page(
                name, EntityIteratorResult(done=False, entities=delta.added), 0, where=where
            )
            deltas[name] = ProviderDelta(page, removed)
        return deltas, results
