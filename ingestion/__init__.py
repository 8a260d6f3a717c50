"""Distributed, incremental ingestion of large paginated sources into a catalog, on Celery.

A provider reads its source page by page; the engine runs it in short bursts (Celery tasks),
commits each page as a delta with a mark on every entity, and at the end of the source sweeps
away what the provider owns but did not see. See the README for the whole picture.
"""

from ingestion.app import Catalog, CatalogEntity, IncrementalIngestion
from ingestion.entities import EntityRejected, entity_ref
from ingestion.provider import (
    DEFAULT_BACKOFF,
    PROVIDER_ANNOTATION,
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    ProviderConfigError,
    ProviderOptions,
    Rejection,
    RetryAfter,
)
from ingestion.settings import Settings
from ingestion.state import Action, CycleStatus

__all__ = [
    "DEFAULT_BACKOFF",
    "PROVIDER_ANNOTATION",
    "Action",
    "Catalog",
    "CatalogEntity",
    "CycleStatus",
    "DeferredEntity",
    "EntityIteratorResult",
    "EntityRejected",
    "IncrementalEntityProvider",
    "IncrementalIngestion",
    "ProviderConfigError",
    "ProviderOptions",
    "Rejection",
    "RetryAfter",
    "Settings",
    "entity_ref",
]

__version__ = "0.1.0"
