"""Turning a source's identifiers into valid Backstage names and tags."""

from __future__ import annotations

import hashlib
import re

from ingestion.entities import valid_name

_MAX = 63
_SUFFIX = 7  # "-" and six hex digits
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9\-_.]+")
_SEPARATOR_RUN = re.compile(r"[\-_.]{2,}")
_TAG = re.compile(r"^[a-z0-9:+#]+(?:-[a-z0-9:+#]+)*$")


def entity_name(raw: str) -> str:
    """``raw`` when it is a valid name; otherwise a valid name made from it.

    Characters outside ``[a-zA-Z0-9-_.]`` become ``-``, a run of separators keeps its first,
    separators at the ends go, the rest is cut to fit 63 characters, and a short hash of
    ``raw`` is appended so that two identifiers that clean up alike keep distinct names.
    """
    if valid_name(raw):
        return raw
    cleaned = _NOT_ALLOWED.sub("-", raw)
    cleaned = _SEPARATOR_RUN.sub(lambda m: m.group(0)[0], cleaned)
    cleaned = cleaned.strip("-_.")
    digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
    stem = cleaned[: _MAX - _SUFFIX].rstrip("-_.")
    return f"{stem}-{digest}" if stem else f"x-{digest}"


def valid_tag(tag: str) -> bool:
    """Whether ``tag`` is a valid Backstage tag: lower case ``[a-z0-9:+#]`` joined by ``-``."""
    return len(tag) <= _MAX and _TAG.match(tag) is not None
