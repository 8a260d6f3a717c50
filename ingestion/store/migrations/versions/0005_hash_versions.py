"""Record the canonical encoding of each entity's hash

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

The canonical JSON an entity's hash is computed from moved to a faster encoder (version 2), which
writes some floats differently. Every row written before keeps its hash and is marked version 1;
a page that finds a version 1 hash different from its own compares the entity again in version 1
before counting it as changed. No row is rewritten here (the column's default fills it), and no
unchanged entity is rewritten or counted as changed by the first cycle after the upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: Postgres and SQLite add the column without rewriting the table.
    op.add_column(
        "catalog_entities",
        sa.Column("hash_version", sa.SmallInteger(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    # Version 2 hashes differ from version 1 only for entities whose text differs; a
    # downgraded engine counts those as changed once and rewrites them.
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_column("hash_version")
