"""Mark entities without maintaining an index on the mark

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Marking an unchanged entity only changes ``mark_cycle``. With that column in an index, every
mark wrote an index entry as well (and on Postgres ruled out a heap-only update). The sweep's
queries read all of a provider's entities through ``(provider, ref)`` anyway, so the index
bought nothing.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_catalog_entities_provider_mark")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE catalog_entities SET (fillfactor = 50)")


def downgrade() -> None:
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_catalog_entities_provider_mark", ["provider", "mark_cycle"], unique=False
        )
