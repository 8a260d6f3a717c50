"""Events from sources and the change feed of the catalog

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``ingestion_events`` stores each accepted event before it is acknowledged, unique by topic and
delivery id; ``ingestion_event_touches`` remembers what events last did to a provider's entities, so a
page read before an event does not undo it. ``catalog_changes`` is the change feed: one row per
change to the catalog, written in the change's transaction. ``ingestion_locks`` holds named
leases (the event applier). Existing rows are not rewritten; the feed begins empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ingestion.store.models import JSONDocument, JSONText, UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)


def upgrade() -> None:
    op.add_column("ingestion_providers", sa.Column("last_event_id", sa.BigInteger()))
    op.add_column("ingestion_cycles", sa.Column("events_at_start", sa.BigInteger()))
    op.create_table(
        "catalog_changes",
        _id(),
        sa.Column("ref", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("cycle_id", sa.BigInteger()),
        sa.Column("event_id", sa.BigInteger()),
        sa.Column("entity", JSONText()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_catalog_changes"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_catalog_changes_created_at", "catalog_changes", ["created_at"])
    op.create_table(
        "ingestion_events",
        _id(),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("payload", JSONDocument(), nullable=False),
        sa.Column("headers", JSONDocument(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", JSONDocument()),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_events"),
        sa.UniqueConstraint("topic", "delivery_id", name="uq_ingestion_events_topic_delivery"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ingestion_events_status_id", "ingestion_events", ["status", "id"])
    op.create_table(
        "ingestion_event_touches",
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("ref", sa.String(512), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "ref", name="pk_ingestion_event_touches"),
    )
    op.create_table(
        "ingestion_locks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("expires_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("name", name="pk_ingestion_locks"),
    )


def downgrade() -> None:
    op.drop_table("ingestion_locks")
    op.drop_table("ingestion_event_touches")
    op.drop_index("ix_ingestion_events_status_id", table_name="ingestion_events")
    op.drop_table("ingestion_events")
    op.drop_index("ix_catalog_changes_created_at", table_name="catalog_changes")
    op.drop_table("catalog_changes")
    with op.batch_alter_table("ingestion_cycles") as batch_op:
        batch_op.drop_column("events_at_start")
    with op.batch_alter_table("ingestion_providers") as batch_op:
        batch_op.drop_column("last_event_id")
