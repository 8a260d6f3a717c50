"""What a provider author writes: the provider interface and the page it returns.

The engine options a provider runs with are in :mod:`ingestion.options`; the errors a provider
may raise (``RetryAfter``, ``ProviderError``) in :mod:`ingestion.errors`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

TCursor = TypeVar("TCursor")
TContext = TypeVar("TContext")


@dataclass(frozen=True)
class DeferredEntity:
    """One entity of a page, with the location key it is reported under (optional)."""

    entity: Mapping[str, Any]
    location_key: str | None = None


@dataclass(frozen=True)
class Rejection:
    """Something of the source that cannot become an entity, such as a file that does not parse.

    The engine records it as an error record of its page, as it does an invalid entity; the
    rest of the page commits. With a ``location_key``, the entities last reported under that key
    count as seen in this cycle: a source that cannot be read at one place must not make the
    sweep remove what it holds there.
    """

    subject: str  # what was rejected: a file path, a record's id
    message: str  # why, saying where (a line number) when the source knows
    rule: str = "source"
    location_key: str | None = None


@dataclass(frozen=True)
class EntityIteratorResult(Generic[TCursor]):
    """What ``next()`` returns: one page of entities and the cursor of the page after it."""

    done: bool
    entities: Sequence[DeferredEntity] = field(default_factory=tuple)
    cursor: TCursor | None = None
    rejections: Sequence[Rejection] = field(default_factory=tuple)


@dataclass(frozen=True)
class RemovalCandidate:
    """An entity the sweep is about to remove: the completed cycle did not see it."""

    ref: str  # kind:namespace/name, lower-case
    entity: Mapping[str, Any]  # the entity as last stored (annotations included)
    location_key: str | None = None


@dataclass(frozen=True)
class RemovalCheck:
    """What a provider found out about removal candidates (see ``check_removals``).

    ``gone``: refs the source confirms are gone; only these are removed. ``present``: fresh
    entities for candidates still in the source (renamed items count as gone under the old ref
    and present under the new one); they are marked in this cycle and written if changed. A
    candidate in neither list is kept for this cycle and checked again after the next one.
    """

    gone: Sequence[str] = field(default_factory=tuple)
    present: Sequence[DeferredEntity] = field(default_factory=tuple)


@dataclass(frozen=True)
class Event:
    """An event from the source, as delivered to ``on_event``.

    ``topic`` is the last part of ``POST /incremental/events/{topic}`` (``github`` for GitHub's
    webhooks) or the ``topic`` argument of the ``ingestion.event`` task. ``headers`` have
    lower-case names; credentials (``authorization``, signatures) are never stored nor passed
    on. ``delivery_id`` identifies one delivery: a redelivery with the same id is applied once.
    """

    topic: str
    payload: Any  # the decoded JSON body
    headers: Mapping[str, str] = field(default_factory=dict)
    delivery_id: str = ""


@dataclass(frozen=True)
class EventDelta:
    """What an event changed in a provider's share of the catalog.

    ``added``: entities added or changed, written at once and marked in the provider's current
    cycle (the sweep at its end keeps them). ``removed``: refs (``kind:namespace/name``) removed
    at once, if this provider owns them. A page of the current cycle read before the event was
    applied does not undo it; one read after it does (the source is the truth).
    """

    added: Sequence[DeferredEntity] = field(default_factory=tuple)
    removed: Sequence[str] = field(default_factory=tuple)


BurstFunction = Callable[[TContext], Any]


class IncrementalEntityProvider(abc.ABC, Generic[TCursor, TContext]):
    """A source read page by page.

    ``around`` builds whatever ``next`` needs (a client, a session) and calls ``burst(context)``
    exactly once; ``next`` returns one page from ``cursor`` (``None`` at the start of a cycle).
    Either method may be ``async def``. Providers hold no state between bursts: a burst may run
    on any worker, and the cursor is the only thing carried from one page to the next.
    """

    @abc.abstractmethod
    def get_provider_name(self) -> str:
        """A name unique among the providers of one deployment."""

    @abc.abstractmethod
    def around(self, burst: Callable[[TContext], Any]) -> Awaitable[None] | None:
        """Set up the context, call ``burst(context)``, tear the context down."""

    @abc.abstractmethod
    def next(
        self, context: TContext, cursor: TCursor | None = None
    ) -> EntityIteratorResult[TCursor] | Awaitable[EntityIteratorResult[TCursor]]:
        """Return the page at ``cursor`` and the cursor of the next page."""

    def check_removals(
        self, context: TContext, candidates: Sequence[RemovalCandidate]
    ) -> RemovalCheck | Awaitable[RemovalCheck]:
        """Optional: ask the source about entities the sweep is about to remove.

        A provider whose paging can skip items while the source changes (page numbers,
        offsets) implements it, so that nothing still in the source is removed. The engine
        calls it inside ``around()``, with the same context as ``next()``, in batches, after
        the last page of a cycle and before its sweep. A provider that does not override it
        has no checking phase: what a completed cycle did not see is removed. When the source
        asks to wait, raise ``RetryAfter``: the batch is checked again after the wait.
        """
        raise NotImplementedError

    def on_event(self, event: Event) -> EventDelta | None:
        """Optional: turn an event from the source into a delta, between cycles.

        Return ``None`` when the event is not this provider's (another topic, another
        organisation); an empty :class:`EventDelta` when it is but changes nothing. The engine
        offers each stored event to every provider that implements this hook, in the order the
        events were accepted. The hook maps the event alone: it has no client and should not
        call the source. Raising :class:`~ingestion.errors.EventRejected` records the event as
        rejected with the message; the cycles still correct whatever an event missed.
        """
        raise NotImplementedError

    def default_options(self) -> Mapping[str, Any]:
        """Engine options this kind of provider needs unless its user sets them (for example
        ``remove_after_missed_cycles`` for a source whose paging can skip items)."""
        return {}


def checks_removals(provider: IncrementalEntityProvider[Any, Any]) -> bool:
    """Whether ``provider`` implements :meth:`IncrementalEntityProvider.check_removals`."""
    return type(provider).check_removals is not IncrementalEntityProvider.check_removals


def handles_events(provider: IncrementalEntityProvider[Any, Any]) -> bool:
    """Whether ``provider`` implements :meth:`IncrementalEntityProvider.on_event`."""
    return type(provider).on_event is not IncrementalEntityProvider.on_event
