"""each crater's centre as a unit vector (unit_x, unit_y, unit_z), generated from lon/lat

The cap searches (radius, k nearest) tested every candidate of the index step with the
haversine, about 0.75 us a row of server CPU (two sines, a cosine, a square root and an atan2,
the haversine term written twice); at 10 million craters a 50 km cap has 2,600 candidates and
that test was most of the search. With the centre stored as a unit vector, the squared chord
to the query point is six subtractions and multiplications: it decides every candidate that
is not within a hair of the radius, where the haversine still decides, so the answer keeps
exactly the rows the haversine keeps (``atlas_db.views``). No index: the 2-D GiST index on
``geom`` stays the index step (migration 0003 says why).

Generated and stored, like ``geom``, so they can never disagree with lon/lat. Adding them
rewrites the table (a few minutes at 10 million craters).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 07:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The views read the new columns; atlas_db.migrate.upgrade re-creates them after the
# migrations (a dropped view loses its grants: re-run 'deepcraters db roles' after a downgrade).
_VIEWS = ("crater_atlas", "crater_with_age", "crater_rims", "reference_atlas", "detection_run_info", "age_run_info")
UNIT_VECTOR_SQL = {"unit_x": "cosd(lat) * cosd(lon)", "unit_y": "cosd(lat) * sind(lon)", "unit_z": "sind(lat)"}


def upgrade() -> None:
    # One ALTER TABLE: the table is rewritten once for the three columns.
    op.execute("ALTER TABLE craters " + ", ".join(
        f"ADD COLUMN {name} double precision GENERATED ALWAYS AS ({expr}) STORED NOT NULL"
        for name, expr in UNIT_VECTOR_SQL.items()))


def downgrade() -> None:
    for view in _VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for name in UNIT_VECTOR_SQL:
        op.drop_column("craters", name)
