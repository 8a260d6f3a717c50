"""Turning a source's identifiers into valid Backstage names and tags."""

from __future__ import annotations

import hashlib
import re

from ingestion.entities import valid_name, valid_tag

__all__ = ["entity_name", "valid_tag"]

_MAX = 63
_SUFFIX = 7  # "-" and six hex digits
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9\-_.]+")
_SEPARATOR_RUN = re.compile(r"[\-_.]{2,}")


def entity_name(raw: str) -> str:
    """``raw`` when it is a valid name; otherwise a valid name made from it.

    A valid name, runs of separators included (``a--b``), is kept as it is. Otherwise
    characters outside ``[a-zA-Z0-9-_.]`` (a line break too) become ``-``, a run of separators
    keeps its first (so names made before runs were allowed stay the same), separators at the
    ends go, the rest is cut to fit 63 characters, and a short hash of ``raw`` is appended so
    that two identifiers that clean up alike keep distinct names.
    """
    if valid_name(raw):
        return raw
    cleaned = _NOT_ALLOWED.sub("-", raw)
    cleaned = _SEPARATOR_RUN.sub(lambda m: m.group(0)[0], cleaned)
    cleaned = cleaned.strip("-_.")
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    stem = cleaned[: _MAX - _SUFFIX].rstrip("-_.")
    return f"{stem}-{digest}" if stem else f"x-{digest}"
