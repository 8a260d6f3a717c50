"""The engine options of a provider: defined once, here.

``add_provider(**options)``, the providers' configuration file, the admin API and the command
line all take or show :class:`ProviderOptions`; nothing else lists the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from ingestion.durations import parse_duration
from ingestion.errors import ProviderConfigError

#: A duration option: a ``timedelta``, a number of seconds, or text like ``500ms``, ``1h30m``.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

#: The backoff used when a provider is given none (as the reference module).
DEFAULT_BACKOFF: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=3),
)


def _percentage(value: object) -> object:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"must be a number from 0 to 100, got {value!r}")
    return value


class ProviderOptions(BaseModel):
    """The engine options of one provider, validated.

    Durations are shown (``model_dump(mode="json")``) as seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_timedelta="float")

    burst_length: Duration = Field(
        timedelta(seconds=3),
        description="How long a burst keeps reading pages (checked after each page); above 0.",
    )
    burst_interval: Duration = Field(
        timedelta(seconds=3), description="The pause between two bursts of a cycle."
    )
    rest_length: Duration = Field(
        timedelta(days=1), description="The pause between the end of a cycle and the next one."
    )
    backoff: tuple[Duration, ...] = Field(
        DEFAULT_BACKOFF,
        min_length=1,
        description="Waits after successive failed bursts; after the last one the cycle is "
        "cancelled and a new one starts.",
    )
    page_retries: StrictInt = Field(
        2,
        ge=0,
        le=100,
        description="How many times a burst asks again, at the same cursor, for a page (or a "
        "batch of removal checks) that failed, before the burst fails and backs off; only while "
        "burst_length has not elapsed.",
    )
    reject_removals_above_percentage: Annotated[
        float | None, BeforeValidator(_percentage), Field(ge=0, le=100)
    ] = Field(
        None,
        description="Hold back a sweep that would remove more than this share (0-100) of the "
        "provider's entities.",
    )
    reject_empty_source_collections: StrictBool = Field(
        False, description="Hold back a sweep when the cycle saw no entity at all."
    )
    hold_removals_until_approved: StrictBool = Field(
        False,
        description="Removals a guard held back stay until an operator approves or dismisses "
        "them, instead of going when a later cycle finds them still missing.",
    )
    remove_after_missed_cycles: StrictInt = Field(
        1,
        ge=1,
        description="Remove an entity only once it was missing from this many consecutive "
        "completed cycles (1: as soon as one completed cycle missed it).",
    )
    removal_check_batch: StrictInt = Field(
        100,
        ge=1,
        le=10_000,
        description="How many removal candidates a provider with removal checks is asked "
        "about at a time.",
    )

    @field_validator("burst_length")
    @classmethod
    def _burst_length_above_zero(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be above 0")
        return value

    @field_validator("backoff", mode="before")
    @classmethod
    def _backoff_is_a_list(cls, value: object) -> object:
        if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
            raise ValueError(f"must be a list of durations, got {type(value).__name__}")
        return value

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in the order they are documented."""
        return tuple(cls.model_fields)

    @classmethod
    def build(cls, provider_name: str, options: Mapping[str, Any]) -> ProviderOptions:
        """Validate ``add_provider`` keyword options; errors name the provider and the option."""
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            raise ProviderConfigError(
                f"provider {provider_name!r}: unknown option(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(cls.model_fields))}"
            )
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(describe_problem(error) for error in exc.errors())
            raise ProviderConfigError(f"provider {provider_name!r}: {problems}") from None


def describe_problem(error: ErrorDetails) -> str:
    """One validation error of an option as ``backoff[1]: must not be negative, got -1s``."""
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else ("." if where else "") + str(part)
    message = problem_message(error)
    return f"{where}: {message}" if where else message


def problem_message(error: ErrorDetails) -> str:
    """What is wrong with an option's value, in the words the options use everywhere."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "too_short" and error["loc"][-1:] == ("backoff",):
        return "must have at least one step"
    percentage = error["loc"][-1:] == ("reject_removals_above_percentage",)
    if percentage and error["type"] in ("greater_than_equal", "less_than_equal"):
        return f"must be a number from 0 to 100, got {error.get('input')!r}"
    if error["type"] == "bool_type":
        return f"must be true or false, got {error.get('input')!r}"
    return message


__all__ = [
    "DEFAULT_BACKOFF",
    "Duration",
    "ProviderOptions",
    "describe_problem",
    "problem_message",
]
