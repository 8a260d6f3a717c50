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
