"""An index on the providers' due time, for the reconciler

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The reconciler asks every few seconds which providers are due. With thousands of providers
an idle tick read the whole table; with this index it reads the due rows only.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ingestion_providers_due_at", "ingestion_providers", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_ingestion_providers_due_at", table_name="ingestion_providers")
