"""Distributed, incremental ingestion of large paginated sources into a catalog, on Celery.

A provider reads its source page by page; the engine runs it in short bursts (Celery tasks),
commits each page as a delta with a mark on every entity, and at the end of the source sweeps
away what the provider owns but did not see. See the README and ``docs/architecture.md``.
"""

from ingestion.app import IncrementalIngestion
from ingestion.catalog import Catalog, CatalogEntity
from ingestion.entities import PROVIDER_ANNOTATION, entity_ref
from ingestion.errors import (
    AppNotFound,
    ConfigurationError,
    DatabaseUnavailable,
    EntityRejected,
    EventRejected,
    IngestionError,
    InsecureConfiguration,
    LeaseLost,
    ProviderConfigError,
    ProviderError,
    RetryAfter,
    SourceRefused,
    UnknownProvider,
)
from ingestion.options import DEFAULT_BACKOFF, ProviderOptions
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    Event,
    EventDelta,
    IncrementalEntityProvider,
    Rejection,
    RemovalCandidate,
    RemovalCheck,
)
from ingestion.settings import Settings
from ingestion.state import Action, BurstOutcome, CycleStatus

__all__ = [
    "DEFAULT_BACKOFF",
    "PROVIDER_ANNOTATION",
    "Action",
    "AppNotFound",
    "BurstOutcome",
    "Catalog",
    "CatalogEntity",
    "ConfigurationError",
    "CycleStatus",
    "DatabaseUnavailable",
    "DeferredEntity",
    "EntityIteratorResult",
    "EntityRejected",
    "Event",
    "EventDelta",
    "EventRejected",
    "IncrementalEntityProvider",
    "IncrementalIngestion",
    "IngestionError",
    "InsecureConfiguration",
    "LeaseLost",
    "ProviderConfigError",
    "ProviderError",
    "ProviderOptions",
    "Rejection",
    "RemovalCandidate",
    "RemovalCheck",
    "RetryAfter",
    "Settings",
    "SourceRefused",
    "UnknownProvider",
    "entity_ref",
]

__version__ = "0.1.0"
