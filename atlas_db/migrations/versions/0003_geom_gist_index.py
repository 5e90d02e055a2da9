"""spatial index on the lon/lat point (2-D GiST) instead of unit-sphere xyz (n-D GiST)

Measured at 1.3 million craters (benchmarks/bench_atlas_db.py): the n-D GiST index on
``xyz`` took 7.3 s to build, more than half of a whole load, because PostGIS has no sort
support for n-D keys and inserts them one by one; a 2-D GiST index on ``geom`` builds
from sorted input in 2.1 s, and a 50 km radius query reads it in 0.9 ms instead of 2.4 ms.
Queries now search lon/lat boxes that cover the spherical cap or region, then test
exactly on the sphere (``atlas_db.srs``). ``xyz`` had no other use and goes: one
generated column less per row to compute and store.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 02:40:00
"""
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_TABLES = ("craters", "reference_craters")
# Views read xyz; atlas_db.migrate.upgrade re-creates them after the migrations (re-run
# 'deepcraters db roles' afterwards: a dropped view loses its grants).
_VIEWS = ("crater_atlas", "crater_with_age", "crater_rims", "reference_atlas", "detection_run_info", "age_run_info")
# SQL functions of the xyz scheme (re-creatable objects, not re-created any more).
_OLD_FUNCTIONS = ("deepcraters_xyz_box(geometry)", "deepcraters_xyz(float8, float8)", "deepcraters_chord(float8)")


def _drop_views() -> None:
    for view in _VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")


def upgrade() -> None:
    _drop_views()
    for table in _TABLES:
        op.drop_index(f"ix_{table}_xyz", table_name=table)
        op.drop_column(table, "xyz")
        op.create_index(f"ix_{table}_geom", table, ["geom"], postgresql_using="gist")
    for fn in _OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")


def downgrade() -> None:
    _drop_views()
    for table in _TABLES:
        op.drop_index(f"ix_{table}_geom", table_name=table)
        op.add_column(table, sa.Column(
            "xyz", Geometry(geometry_type="POINTZ", srid=0, dimension=3, spatial_index=False),
            sa.Computed("ST_MakePoint(cosd(lat) * cosd(lon), cosd(lat) * sind(lon), sind(lat))", persisted=True),
            nullable=False))
        op.create_index(f"ix_{table}_xyz", table, ["xyz"], postgresql_using="gist",
                        postgresql_ops={"xyz": "gist_geometry_ops_nd"})
