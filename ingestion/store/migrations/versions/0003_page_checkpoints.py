"""Name the page table for what it holds: checkpoints, apart from an entity's mark

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

``ingestion_marks`` held one row per committed page (its cursor), while an entity's mark is
``catalog_entities.mark_cycle``. The table becomes ``ingestion_checkpoints``; its rows, keys
and sequence keep their values.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RENAMES = (
    ("pk_ingestion_marks", "pk_ingestion_checkpoints"),
    (
        "fk_ingestion_marks_cycle_id_ingestion_cycles",
        "fk_ingestion_checkpoints_cycle_id_ingestion_cycles",
    ),
    ("uq_ingestion_marks_cycle_sequence", "uq_ingestion_checkpoints_cycle_sequence"),
)


def _rename(old_table: str, new_table: str, renames: Sequence[tuple[str, str]]) -> None:
    op.rename_table(old_table, new_table)
    if op.get_bind().dialect.name == "postgresql":
        for old, new in renames:
            op.execute(f'ALTER TABLE {new_table} RENAME CONSTRAINT "{old}" TO "{new}"')
        op.execute(f"ALTER SEQUENCE {old_table}_id_seq RENAME TO {new_table}_id_seq")
        return
    # SQLite keeps constraint names in the table's DDL: rebuild the table under the new ones.
    old_unique, new_unique = renames[2]
    with op.batch_alter_table(new_table, recreate="always") as batch_op:
        batch_op.drop_constraint(old_unique, type_="unique")
        batch_op.create_unique_constraint(new_unique, ["cycle_id", "sequence"])


def upgrade() -> None:
    _rename("ingestion_marks", "ingestion_checkpoints", _RENAMES)


def downgrade() -> None:
    _rename("ingestion_checkpoints", "ingestion_marks", [(new, old) for old, new in _RENAMES])
