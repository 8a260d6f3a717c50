"""Alembic environment: run from ``ingestion.store.migrate`` with an open connection."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from ingestion.store.database import create_sql_engine
from ingestion.store.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        user_module_prefix="ingestion.store.models.",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_sql_engine(os.environ.get("INGESTION_DATABASE_URL", "sqlite:///ingestion.db"))
    with engine.begin() as conn:
        _run(conn)
