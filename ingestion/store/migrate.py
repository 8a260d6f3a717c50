"""Alembic, driven from Python: the schema is migrated by the engine's own entry points."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"

# Any constant works: it only has to be the same for every process that migrates.
_PG_LOCK_KEY = 7_301_113_001


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision``; safe when several workers start at once."""
    config = alembic_config()
    # On SQLite a writing transaction (BEGIN IMMEDIATE) serialises concurrent migrations.
    with engine.connect().execution_options(ingestion_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Workers starting together migrate one after the other, the rest find nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
