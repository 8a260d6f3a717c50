"""The checking phase of a cycle: its phase, where its removal checks stand, what they found

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

A provider that checks removals asks its source about the removal candidates between the last
page of a cycle and its sweep, in batches that resume across bursts: the cycle records its
phase and the last candidate asked about; cycles and bursts count the candidates checked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingestion_cycles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("phase", sa.String(length=16), nullable=False, server_default="ingest")
        )
        batch_op.add_column(sa.Column("check_after", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("checked", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("kept", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("ingestion_bursts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checked", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ingestion_bursts", schema=None) as batch_op:
        batch_op.drop_column("checked")
    with op.batch_alter_table("ingestion_cycles", schema=None) as batch_op:
        batch_op.drop_column("kept")
        batch_op.drop_column("checked")
        batch_op.drop_column("check_after")
        batch_op.drop_column("phase")
