"""craters' natural key led by crater_id, and a BRIN index on run_id

A B-tree build sorts on abbreviated keys of the first column only. For UNIQUE (run_id,
crater_id) that column holds one value per run, so every comparison fell through to the full
text ids: the key took as long to build as the COPY of the rows (10 million craters, 2 cores,
shared machine: 17.8 and 18.3 s). Led by crater_id, the sort compares the ids' first 8 bytes
as integers: 7.1 and 7.0 s. The key still serves ON CONFLICT (run_id, crater_id) (PostgreSQL
infers an arbiter index from its set of columns) and lookups of one crater of one run; the
lookups of a whole run (its row count, the stale-row DELETE, the cascade from detection_runs,
age loads' crater keys) take a BRIN index on run_id instead, 1.8 and 1.9 s to build at 10
million, because a run's rows lie together in the heap (every load appends them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:45:00
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("uq_craters_run_id_crater_id", "craters", type_="unique")
    op.create_unique_constraint("uq_craters_crater_id_run_id", "craters", ["crater_id", "run_id"])
    op.create_index("ix_craters_run_id", "craters", ["run_id"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_craters_run_id", table_name="craters")
    op.drop_constraint("uq_craters_crater_id_run_id", "craters", type_="unique")
    op.create_unique_constraint("uq_craters_run_id_crater_id", "craters", ["run_id", "crater_id"])
