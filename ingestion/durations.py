"""Human-friendly durations: ``500ms``, ``3s``, ``10m``, ``1h30m``, ``1d``, ``2w``."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")

HINT = "use a number of seconds or a duration such as 500ms, 3s, 10m, 1h30m, 1d, 2w"


def parse_duration(value: object) -> timedelta:
    """A non-negative duration from a timedelta, a number of seconds, or text like ``1h30m``.

    Raises ``ValueError`` with a message that says what is accepted.
    """
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}; {HINT}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a duration, got {value!r}; {HINT}")
        duration = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "").lower()
        if _is_number(text):
            duration = timedelta(seconds=float(text))
        elif _WHOLE.fullmatch(text):
            duration = sum(
                (float(number) * _UNITS[unit] for number, unit in _PART.findall(text)),
                timedelta(0),
            )
        else:
            raise ValueError(f"invalid duration {value!r}; {HINT}")
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}; {HINT}")
    if duration < timedelta(0):
        raise ValueError(f"must not be negative (a duration), got {duration.total_seconds():g}s")
    return duration


def _is_number(text: str) -> bool:
    return re.fullmatch(r"\d+(?:\.\d+)?", text) is not None
