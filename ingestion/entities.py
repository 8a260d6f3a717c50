"""Entity refs, validation of the Backstage envelope, and the canonical content hash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingestion.errors import EntityRejected

DEFAULT_NAMESPACE = "default"

#: The annotation every ingested entity carries, naming the provider that owns it.
PROVIDER_ANNOTATION = "backstage/incremental-entity-provider"

# Backstage: 1-63 characters of [a-zA-Z0-9], separated by single '-', '_' or '.'.
_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[-_.][a-zA-Z0-9]+)*$")
_KIND = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*$")
_MAX_NAME = 63


@dataclass(frozen=True, slots=True)
class PreparedEntity:
    """An entity ready to be written: its ref, canonical body and content hash."""

    ref: str
    name: str
    location_key: str | None
    body: dict[str, Any]
    canonical: str
    hash: str


def entity_ref(kind: str, namespace: str | None, name: str) -> str:
    """``kind:namespace/name``, lower-case, with the default namespace filled in."""
    return f"{kind}:{namespace or DEFAULT_NAMESPACE}/{name}".lower()


def valid_name(value: object) -> bool:
    """Whether ``value`` is a valid Backstage name or namespace."""
    return isinstance(value, str) and len(value) <= _MAX_NAME and bool(_NAME.match(value))


def describe(entity: object) -> str:
    """A short label for an entity in an error: its name when it has one."""
    if isinstance(entity, Mapping):
        metadata = entity.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
            return str(metadata["name"])[:200]
    return ""


def validate(entity: object) -> None:
    """Raise :class:`EntityRejected` when ``entity`` breaks an envelope rule."""
    if not isinstance(entity, Mapping):
        raise EntityRejected("entity", f"an entity must be a mapping, got {type(entity).__name__}")
    api_version = entity.get("apiVersion")
    if not isinstance(api_version, str) or not api_version.strip():
        raise EntityRejected("apiVersion", "apiVersion is missing or not a non-empty string")
    kind = entity.get("kind")
    if not isinstance(kind, str) or not kind:
        raise EntityRejected("kind", "kind is missing or not a non-empty string")
    if len(kind) > _MAX_NAME or not _KIND.match(kind):
        raise EntityRejected("kind", f"kind {kind!r} must be 1-63 letters and digits")
    metadata = entity.get("metadata")
    if not isinstance(metadata, Mapping):
        raise EntityRejected("metadata", "metadata is missing or not a mapping")
    name = metadata.get("name")
    if not valid_name(name):
        raise EntityRejected(
            "metadata.name",
            f"metadata.name {name!r} must be 1-63 characters of [a-zA-Z0-9] "
            "separated by single '-', '_' or '.'",
        )
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    if not valid_name(namespace):
        raise EntityRejected(
            "metadata.namespace",
            f"metadata.namespace {namespace!r} must be 1-63 characters of [a-zA-Z0-9] "
            "separated by single '-', '_' or '.'",
        )
    for field in ("annotations", "labels"):
        _validate_string_map(field, metadata.get(field))


def _validate_string_map(field: str, values: object) -> None:
    if values is None:
        return
    if not isinstance(values, Mapping):
        raise EntityRejected(f"metadata.{field}", f"metadata.{field} must be a mapping")
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EntityRejected(
                f"metadata.{field}",
                f"metadata.{field} must map strings to strings; {key!r} maps to "
                f"{type(value).__name__}",
            )


def prepare(entity: object, provider_name: str, location_key: str | None) -> PreparedEntity:
    """Validate ``entity``, annotate it with its provider and compute its ref and hash."""
    validate(entity)
    assert isinstance(entity, Mapping)
    metadata = dict(entity["metadata"])
    annotations = dict(metadata.get("annotations") or {})
    annotations[PROVIDER_ANNOTATION] = provider_name
    metadata["annotations"] = annotations
    body = dict(entity)
    body["metadata"] = metadata
    try:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise EntityRejected("json", f"the entity cannot be encoded as JSON: {exc}") from None
    if location_key is not None and not isinstance(location_key, str):
        raise EntityRejected(
            "location_key", f"location_key must be a string, got {type(location_key).__name__}"
        )
    name = metadata["name"]
    return PreparedEntity(
        ref=entity_ref(body["kind"], metadata.get("namespace"), name),
        name=name,
        location_key=location_key,
        body=body,
        canonical=canonical,
        hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )
