"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ingestion.store.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_entities",
        sa.Column("ref", sa.String(length=512), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("location_key", sa.Text(), nullable=True),
        sa.Column("entity", ingestion.store.models.JSONDocument(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mark_cycle", sa.BigInteger(), nullable=False),
        sa.Column("created_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_catalog_entities")),
    )
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_catalog_entities_provider_mark", ["provider", "mark_cycle"], unique=False
        )
        batch_op.create_index("ix_catalog_entities_provider_ref", ["provider", "ref"], unique=False)

    op.create_table(
        "ingestion_bursts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("cycle_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("ticket", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("entities", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_bursts")),
        sa.UniqueConstraint("provider", "ticket", name="uq_ingestion_bursts_provider_ticket"),
    )
    with op.batch_alter_table("ingestion_bursts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingestion_bursts_cycle_id"), ["cycle_id"], unique=False
        )

    op.create_table(
        "ingestion_cycles",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("bursts", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("entities", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("started_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_cycles")),
    )
    with op.batch_alter_table("ingestion_cycles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingestion_cycles_provider"), ["provider"], unique=False
        )

    op.create_table(
        "ingestion_errors",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("cycle_id", sa.BigInteger(), nullable=True),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("entity", sa.Text(), nullable=True),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_errors")),
    )
    with op.batch_alter_table("ingestion_errors", schema=None) as batch_op:
        batch_op.create_index("ix_ingestion_errors_provider_id", ["provider", "id"], unique=False)

    op.create_table(
        "ingestion_providers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("due_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ticket", sa.BigInteger(), nullable=False),
        sa.Column("cycle_id", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column(
            "lease_expires_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("sent_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "last_error_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("blocked_cycle_id", sa.BigInteger(), nullable=True),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("blocked_count", sa.Integer(), nullable=False),
        sa.Column("created_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ingestion_providers")),
    )
    op.create_table(
        "ingestion_marks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cycle_id", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("entities", sa.Integer(), nullable=False),
        sa.Column("created_at", ingestion.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cycle_id"],
            ["ingestion_cycles.id"],
            name=op.f("fk_ingestion_marks_cycle_id_ingestion_cycles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_marks")),
        sa.UniqueConstraint("cycle_id", "sequence", name="uq_ingestion_marks_cycle_sequence"),
    )


def downgrade() -> None:
    op.drop_table("ingestion_marks")
    op.drop_table("ingestion_providers")
    with op.batch_alter_table("ingestion_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_ingestion_errors_provider_id")

    op.drop_table("ingestion_errors")
    with op.batch_alter_table("ingestion_cycles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingestion_cycles_provider"))

    op.drop_table("ingestion_cycles")
    with op.batch_alter_table("ingestion_bursts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingestion_bursts_cycle_id"))

    op.drop_table("ingestion_bursts")
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_catalog_entities_provider_ref")
        batch_op.drop_index("ix_catalog_entities_provider_mark")

    op.drop_table("catalog_entities")
