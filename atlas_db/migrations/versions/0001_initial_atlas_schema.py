"""initial atlas schema: runs, craters, age runs and estimates, reference catalogues

SQL functions and views are not here: they are repeatable objects that
``atlas_db.migrate.upgrade`` re-creates from code after the migrations.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 23:32:35.653843
"""
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('detection_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_name', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('config_hash', sa.Text(), nullable=False),
    sa.Column('source_mosaics', sa.ARRAY(sa.Text()), nullable=False),
    sa.Column('code_version', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_detection_runs')),
    sa.UniqueConstraint('run_name', name=op.f('uq_detection_runs_run_name'))
    )
    op.create_table('reference_catalogues',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reference_catalogues')),
    sa.UniqueConstraint('name', name=op.f('uq_reference_catalogues_name'))
    )
    op.create_table('age_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_name', sa.Text(), nullable=False),
    sa.Column('atlas_run_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('config_hash', sa.Text(), nullable=False),
    sa.Column('code_version', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['atlas_run_id'], ['detection_runs.id'], name=op.f('fk_age_runs_atlas_run_id_detection_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_age_runs')),
    sa.UniqueConstraint('run_name', name=op.f('uq_age_runs_run_name'))
    )
    op.create_geospatial_table('craters',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('crater_id', sa.Text(), nullable=False),
    sa.Column('lon', sa.Double(), nullable=False),
    sa.Column('lat', sa.Double(), nullable=False),
    sa.Column('diameter_km', sa.Double(), nullable=False),
    sa.Column('score', sa.Double(), nullable=False),
    sa.Column('x0_px', sa.Double(), nullable=False),
    sa.Column('y0_px', sa.Double(), nullable=False),
    sa.Column('x1_px', sa.Double(), nullable=False),
    sa.Column('y1_px', sa.Double(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=104903, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), sa.Computed('ST_SetSRID(ST_MakePoint(lon, lat), 104903)', persisted=True), nullable=False),
    sa.Column('xyz', Geometry(geometry_type='POINTZ', srid=0, dimension=3, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), sa.Computed('ST_MakePoint(cosd(lat) * cosd(lon), cosd(lat) * sind(lon), sind(lat))', persisted=True), nullable=False),
    sa.CheckConstraint('diameter_km > 0', name=op.f('ck_craters_diameter_positive')),
    sa.CheckConstraint('lat BETWEEN -90 AND 90', name=op.f('ck_craters_lat_range')),
    sa.CheckConstraint('level >= 1', name=op.f('ck_craters_level_positive')),
    sa.CheckConstraint('lon >= -180 AND lon < 180', name=op.f('ck_craters_lon_range')),
    sa.CheckConstraint('score BETWEEN 0 AND 1', name=op.f('ck_craters_score_range')),
    sa.ForeignKeyConstraint(['run_id'], ['detection_runs.id'], name=op.f('fk_craters_run_id_detection_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_craters')),
    sa.UniqueConstraint('run_id', 'crater_id', name=op.f('uq_craters_run_id_crater_id'))
    )
    op.create_geospatial_index(op.f('ix_craters_xyz'), 'craters', ['xyz'], unique=False, postgresql_using='gist', postgresql_ops={'xyz': 'gist_geometry_ops_nd'})
    op.create_geospatial_table('reference_craters',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('catalogue_id', sa.Integer(), nullable=False),
    sa.Column('ref_id', sa.Text(), nullable=False),
    sa.Column('lon', sa.Double(), nullable=False),
    sa.Column('lat', sa.Double(), nullable=False),
    sa.Column('diameter_km', sa.Double(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=104903, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), sa.Computed('ST_SetSRID(ST_MakePoint(lon, lat), 104903)', persisted=True), nullable=False),
    sa.Column('xyz', Geometry(geometry_type='POINTZ', srid=0, dimension=3, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), sa.Computed('ST_MakePoint(cosd(lat) * cosd(lon), cosd(lat) * sind(lon), sind(lat))', persisted=True), nullable=False),
    sa.CheckConstraint('diameter_km > 0', name=op.f('ck_reference_craters_diameter_positive')),
    sa.CheckConstraint('lat BETWEEN -90 AND 90', name=op.f('ck_reference_craters_lat_range')),
    sa.CheckConstraint('lon >= -180 AND lon < 180', name=op.f('ck_reference_craters_lon_range')),
    sa.ForeignKeyConstraint(['catalogue_id'], ['reference_catalogues.id'], name=op.f('fk_reference_craters_catalogue_id_reference_catalogues'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reference_craters')),
    sa.UniqueConstraint('catalogue_id', 'ref_id', name=op.f('uq_reference_craters_catalogue_id_ref_id'))
    )
    op.create_geospatial_index(op.f('ix_reference_craters_xyz'), 'reference_craters', ['xyz'], unique=False, postgresql_using='gist', postgresql_ops={'xyz': 'gist_geometry_ops_nd'})
    op.create_table('age_estimates',
    sa.Column('age_run_id', sa.Integer(), nullable=False),
    sa.Column('crater_pk', sa.BigInteger(), nullable=False),
    sa.Column('p_pnc', sa.Double(), nullable=False),
    sa.Column('p_nc', sa.Double(), nullable=False),
    sa.Column('p_ic', sa.Double(), nullable=False),
    sa.Column('p_ec', sa.Double(), nullable=False),
    sa.Column('p_cc', sa.Double(), nullable=False),
    sa.Column('age_class', sa.Text(), nullable=False),
    sa.Column('entropy', sa.Double(), nullable=False),
    sa.CheckConstraint("age_class IN ('pNc', 'Nc', 'Ic', 'Ec', 'Cc')", name=op.f('ck_age_estimates_age_class_code')),
    sa.ForeignKeyConstraint(['age_run_id'], ['age_runs.id'], name=op.f('fk_age_estimates_age_run_id_age_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['crater_pk'], ['craters.id'], name=op.f('fk_age_estimates_crater_pk_craters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('age_run_id', 'crater_pk', name=op.f('pk_age_estimates'))
    )
    op.create_index(op.f('ix_age_estimates_crater_pk'), 'age_estimates', ['crater_pk'], unique=False)


def downgrade() -> None:
    # Views (re-created by every upgrade) depend on the tables: drop them first.
    for view in ("crater_atlas", "crater_with_age", "crater_rims", "reference_atlas",
                 "detection_run_info", "age_run_info"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_index(op.f('ix_age_estimates_crater_pk'), table_name='age_estimates')
    op.drop_table('age_estimates')
    op.drop_geospatial_index(op.f('ix_reference_craters_xyz'), table_name='reference_craters', postgresql_using='gist', postgresql_ops={'xyz': 'gist_geometry_ops_nd'}, column_name='xyz')
    op.drop_geospatial_table('reference_craters')
    op.drop_geospatial_index(op.f('ix_craters_xyz'), table_name='craters', postgresql_using='gist', postgresql_ops={'xyz': 'gist_geometry_ops_nd'}, column_name='xyz')
    op.drop_geospatial_table('craters')
    op.drop_table('age_runs')
    op.drop_table('reference_catalogues')
    op.drop_table('detection_runs')
