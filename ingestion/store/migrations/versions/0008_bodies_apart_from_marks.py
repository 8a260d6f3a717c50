"""Keep each entity's body in a table of its own

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Marking an unchanged entity changes only ``mark_cycle``, yet a row update writes a new version of
the whole row: with the body in ``catalog_entities``, every mark of every cycle wrote the body
again (about 1 KB an entity) to the table and the WAL. The bodies move to ``catalog_bodies``,
keyed by ref; ``catalog_entities`` keeps the owner, location, hash and mark, and a mark now
writes a version of that narrow row only.

The upgrade copies every body once. On Postgres the dropped column's bytes stay in the old row
versions until they are rewritten: the space is reused by later rows, and ``VACUUM FULL
catalog_entities`` at a quiet time gives it back to the operating system.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ingestion.store.models import JSONDocument

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_bodies",
        sa.Column("ref", sa.String(512), nullable=False),
        sa.Column("entity", JSONDocument(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_catalog_bodies")),
    )
    op.execute("INSERT INTO catalog_bodies (ref, entity) SELECT ref, entity FROM catalog_entities")
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_column("entity")


def downgrade() -> None:
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entity", JSONDocument(), nullable=True))
    op.execute(
        "UPDATE catalog_entities SET entity = "
        "(SELECT b.entity FROM catalog_bodies AS b WHERE b.ref = catalog_entities.ref)"
    )
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.alter_column("entity", existing_type=JSONDocument(), nullable=False)
    op.drop_table("catalog_bodies")
