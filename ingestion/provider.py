"""What a provider author writes: the provider interface, its page result and its options."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

TCursor = TypeVar("TCursor")
TContext = TypeVar("TContext")

#: The annotation every ingested entity carries, naming the provider that owns it.
PROVIDER_ANNOTATION = "backstage/incremental-entity-provider"

#: The backoff used when ``add_provider`` is given none (as the reference module).
DEFAULT_BACKOFF: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=3),
)


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


class RetryAfter(Exception):
    """Raised by ``around()`` or ``next()`` when the source asks to wait, as a rate limit does.

    The burst stops (pages already returned stay committed) and the cycle resumes after
    ``seconds``; unlike a failure it spends no backoff step.
    """

    def __init__(self, seconds: float, reason: str) -> None:
        self.seconds = seconds if seconds > 0 else 0.0  # NaN and negative mean "now"
        self.reason = reason
        super().__init__(f"{reason} (retry after {self.seconds:g}s)")


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


class ProviderConfigError(ValueError):
    """A provider or one of its options cannot be accepted."""


@dataclass(frozen=True)
class ProviderOptions:
    """The engine options of one provider, validated."""

    burst_length: timedelta = timedelta(seconds=3)
    burst_interval: timedelta = timedelta(seconds=3)
    rest_length: timedelta = timedelta(days=1)
    backoff: tuple[timedelta, ...] = DEFAULT_BACKOFF
    reject_removals_above_percentage: float | None = None
    reject_empty_source_collections: bool = False

    @classmethod
    def build(cls, provider_name: str, options: Mapping[str, Any]) -> ProviderOptions:
        """Validate ``add_provider`` keyword options; errors name the provider and the option."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ProviderConfigError(
                f"provider {provider_name!r}: unknown option(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name in ("burst_length", "burst_interval", "rest_length"):
            if name in options:
                values[name] = _duration(provider_name, name, options[name])
        if values.get("burst_length") == timedelta(0):
            raise ProviderConfigError(f"provider {provider_name!r}: burst_length must be above 0")
        if "backoff" in options:
            steps = options["backoff"]
            if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
                raise ProviderConfigError(
                    f"provider {provider_name!r}: backoff must be a list of durations, "
                    f"got {type(steps).__name__}"
                )
            if not steps:
                raise ProviderConfigError(
                    f"provider {provider_name!r}: backoff must have at least one step"
                )
            values["backoff"] = tuple(
                _duration(provider_name, f"backoff[{i}]", step) for i, step in enumerate(steps)
            )
        pct = options.get("reject_removals_above_percentage")
        if pct is not None:
            if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
                raise ProviderConfigError(
                    f"provider {provider_name!r}: reject_removals_above_percentage must be a "
                    f"number from 0 to 100, got {pct!r}"
                )
            values["reject_removals_above_percentage"] = float(pct)
        empty = options.get("reject_empty_source_collections", False)
        if not isinstance(empty, bool):
            raise ProviderConfigError(
                f"provider {provider_name!r}: reject_empty_source_collections must be true or "
                f"false, got {empty!r}"
            )
        values["reject_empty_source_collections"] = empty
        return cls(**values)


def _duration(provider_name: str, option: str, value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ProviderConfigError(
            f"provider {provider_name!r}: {option} must be a timedelta or a number of seconds, "
            f"got {type(value).__name__}"
        )
    duration = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if duration < timedelta(0):
        raise ProviderConfigError(
            f"provider {provider_name!r}: {option} must not be negative, got {duration}"
        )
    return duration
