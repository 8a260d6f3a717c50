"""The store: the only package that speaks SQL."""

from ingestion.store.records import (
    Claim,
    Doorbell,
    ErrorKind,
    LostBurst,
    Page,
    PageCommit,
    Problem,
    ProviderStatus,
    Skip,
    SweepResult,
)
from ingestion.store.store import LeaseLost, Store, UnknownProvider, create_db_engine

__all__ = [
    "Claim",
    "Doorbell",
    "ErrorKind",
    "LeaseLost",
    "LostBurst",
    "Page",
    "PageCommit",
    "Problem",
    "ProviderStatus",
    "Skip",
    "Store",
    "SweepResult",
    "UnknownProvider",
    "create_db_engine",
]
