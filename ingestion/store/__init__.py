"""The store: the only package that speaks SQL (see :mod:`ingestion.store.store`)."""

from ingestion.store.database import Database, Tx, create_sql_engine
from ingestion.store.records import (
    CheckBatch,
    CheckCommit,
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
from ingestion.store.store import Store

__all__ = [
    "CheckBatch",
    "CheckCommit",
    "Claim",
    "Database",
    "Doorbell",
    "ErrorKind",
    "LostBurst",
    "Page",
    "PageCommit",
    "Problem",
    "ProviderStatus",
    "Skip",
    "Store",
    "SweepResult",
    "Tx",
    "create_sql_engine",
]
