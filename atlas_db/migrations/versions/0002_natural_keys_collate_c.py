"""natural-key text columns compare bytewise (COLLATE "C")

``craters.crater_id`` and ``reference_craters.ref_id`` are identifiers, never sorted for
people: bytewise comparison lets B-tree builds and inserts on the natural keys use
abbreviated keys and memcmp instead of the locale's strcoll (the unique index on
(run_id, crater_id) built in less than half the time at 1.3 million craters).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_KEYS = (("craters", "crater_id"), ("reference_craters", "ref_id"))
# Views read the columns, and PostgreSQL cannot change the type of a column a view uses.
# atlas_db.migrate.upgrade re-creates them after the migrations (re-run 'deepcraters db roles'
# afterwards: a dropped view loses its grants).
_VIEWS = ("crater_atlas", "crater_with_age", "crater_rims", "reference_atlas", "detection_run_info", "age_run_info")


def _drop_views() -> None:
    for view in _VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")


def upgrade() -> None:
    _drop_views()
    # Same type, new collation: no table rewrite; the unique indexes on the column are rebuilt.
    for table, column in _KEYS:
        op.alter_column(table, column, type_=sa.Text(collation="C"), existing_type=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    _drop_views()
    for table, column in _KEYS:
        op.alter_column(table, column, type_=sa.Text(), existing_type=sa.Text(collation="C"), existing_nullable=False)
