"""Keep the change feed's bodies as jsonb on Postgres

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

A page's added and changed entities went to the feed as text, sent a second time over the
connection beside the catalog's copy. On Postgres the feed's ``entity`` becomes ``jsonb``, so
that a change copies the body its transaction wrote to ``catalog_bodies`` instead: a page's
bodies are sent and parsed once. SQLite keeps text, as before.

The upgrade rewrites ``catalog_changes`` once, parsing each stored body, under a lock that
holds the feed's writers and readers for as long as that takes: a feed pruned by
``INGESTION_CHANGES_RETENTION`` (7 days by default) is as large as a week of changes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE catalog_changes ALTER COLUMN entity TYPE jsonb USING CAST(entity AS jsonb)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE catalog_changes ALTER COLUMN entity TYPE text USING CAST(entity AS text)"
        )
