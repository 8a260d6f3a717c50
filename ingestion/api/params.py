"""The API's path and query parameters, checked at the edge before any of them reaches SQL.

Postgres refuses NUL in a string and SQLite an integer beyond 64 bits; a column holds a bounded
length. A value that breaks one of those rules gets a 422 naming the parameter, never a 500.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from ingestion.events import TOPIC_PATTERN

#: The widths of the columns these parameters are compared with (see ``store.models``).
MAX_REF = 512
MAX_PROVIDER = 255
MAX_KIND = 63
MAX_RULE = 64
#: The largest id a BIGINT (and SQLite's INTEGER) holds.
MAX_ID = 2**63 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# kind:namespace/name, each part without blanks, control characters, ':' or '/'.
_PART = r"[^\x00-\x20\x7f-\x9f:/]+"
_REF = re.compile(rf"{_PART}:{_PART}/{_PART}")


def plain_text(value: str) -> str:
    """``value`` if it holds no control character (NUL included)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, newline, ...)")
    return value


def ref_shaped(value: str) -> str:
    """``value`` if it looks like an entity ref, ``kind:namespace/name``."""
    plain_text(value)
    if not _REF.fullmatch(value):
        raise ValueError("must be an entity ref, kind:namespace/name")
    return value


def _optional_text(value: str | None) -> str | None:
    return None if value is None else plain_text(value)


def _optional_ref(value: str | None) -> str | None:
    return None if value is None else ref_shaped(value)


ProviderName = Annotated[
    str,
    Path(min_length=1, max_length=MAX_PROVIDER, description="A registered provider's name."),
    AfterValidator(plain_text),
]
RefPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_REF,
        description="An entity ref, kind:namespace/name (case does not matter).",
    ),
    AfterValidator(plain_text),
]
ProviderFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_PROVIDER, description="Only this provider's entities."),
    AfterValidator(_optional_text),
]
KindFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_KIND, description="Only entities of this kind."),
    AfterValidator(_optional_text),
]
AfterRef = Annotated[
    str | None,
    Query(max_length=MAX_REF, description="The last ref of the previous page."),
    AfterValidator(_optional_ref),
]
SearchText = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_REF,
        description="Only refs holding this fragment (a name, or part of one).",
    ),
    AfterValidator(_optional_text),
]
RuleFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_RULE, description="Only records of this rule."),
    AfterValidator(_optional_text),
]

#: An event topic, as :func:`ingestion.events.check_topic` accepts it.
TopicPath = Annotated[
    str,
    Path(
        pattern=f"^{TOPIC_PATTERN}$",
        description="The event's topic: github for GitHub's webhooks.",
    ),
]
