"""The atlas schema: typed SQLAlchemy 2 declarative models with GeoAlchemy2 geometry.

Natural keys make loads idempotent: a detection run by ``run_name``, a crater by
(``crater_id``, run), an age run by ``run_name``, an age estimate by (age run,
crater), a reference crater by (catalogue, ``ref_id``).

Each crater stores lon/lat as numbers and a generated column derived from them (so the
two can never disagree): ``geom``, a point in the Moon's geographic CRS, with a 2-D GiST
index that every spatial query searches with lon/lat boxes before an exact test on the
sphere (see ``atlas_db.srs``). Rim polygons are computed on demand (view ``crater_rims``)
rather than stored: 1.3 million stored 32-gons would multiply load bytes ~5x for a shape
that is a pure function of centre and diameter.
"""
from __future__ import annotations

import datetime as dt

from geoalchemy2 import Geometry
from sqlalchemy import (ARRAY, BigInteger, CheckConstraint, Computed, DateTime, Double, ForeignKey, Index, Integer,
                        MetaData, Text, UniqueConstraint, func)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from atlas_db.srs import GEOM_SQL
from etl.age_classes import AGE_CLASS_CODES, PROB_COLUMNS
from etl.moon import MOON_SRID

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _point_column():
    """Generated lon/lat point (Moon SRID) of a row with lon, lat."""
    return mapped_column(Geometry("POINT", srid=MOON_SRID, spatial_index=False),
                         Computed(GEOM_SQL.format(lon="lon", lat="lat"), persisted=True), nullable=False)


#: Components of a lon/lat centre as a unit vector (x towards lon 0 on the equator, z north);
#: cosd/sind are exact at multiples of 30 degrees, so the poles are (0, 0, +-1) exactly.
UNIT_VECTOR_SQL = {"unit_x": "cosd(lat) * cosd(lon)", "unit_y": "cosd(lat) * sind(lon)", "unit_z": "sind(lat)"}


def _unit_vector_column(expression: str):
    """Generated unit-vector component of a row with lon, lat (stored: computed once, at load)."""
    return mapped_column(Double, Computed(expression, persisted=True), nullable=False)


def _lon_lat_checks() -> tuple:
    """Fresh constraint objects per table (a constraint belongs to one table)."""
    return (
        CheckConstraint("lon >= -180 AND lon < 180", name="lon_range"),
        CheckConstraint("lat BETWEEN -90 AND 90", name="lat_range"),
        CheckConstraint("diameter_km > 0", name="diameter_positive"),
    )


class DetectionRun(Base):
    """One detector run over one or more mosaics: the provenance of its atlas."""

    __tablename__ = "detection_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_name: Mapped[str] = mapped_column(Text, unique=True)
    model: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(Text)
    source_mosaics: Mapped[list[str]] = mapped_column(ARRAY(Text))
    code_version: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Crater(Base):
    """One detected crater of one detection run."""

    __tablename__ = "craters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("detection_runs.id", ondelete="CASCADE"))
    crater_id: Mapped[str] = mapped_column(Text(collation="C"))  # an identifier: bytewise, fast to index
    lon: Mapped[float] = mapped_column(Double)
    lat: Mapped[float] = mapped_column(Double)
    diameter_km: Mapped[float] = mapped_column(Double)
    score: Mapped[float] = mapped_column(Double)
    x0_px: Mapped[float] = mapped_column(Double)
    y0_px: Mapped[float] = mapped_column(Double)
    x1_px: Mapped[float] = mapped_column(Double)
    y1_px: Mapped[float] = mapped_column(Double)
    level: Mapped[int] = mapped_column(Integer)
    geom = _point_column()
    # The centre as a unit vector, for the cap searches' cheap test (squared chord, atlas_db.views).
    unit_x: Mapped[float] = _unit_vector_column(UNIT_VECTOR_SQL["unit_x"])
    unit_y: Mapped[float] = _unit_vector_column(UNIT_VECTOR_SQL["unit_y"])
    unit_z: Mapped[float] = _unit_vector_column(UNIT_VECTOR_SQL["unit_z"])

    # The natural key leads with crater_id: a B-tree build sorts on abbreviated keys of its
    # first column, which for (run_id, crater_id) is one value per run, so every comparison went
    # to the full ids; led by the id, 10 million craters built in 7.0 s instead of 17.8 s (2 cores,
    # shared). Lookups of one run's rows (counts, the stale-row DELETE, the cascade from
    # detection_runs, age loads' key lookup) take the BRIN index on run_id, 1.9 s to build: a
    # run's rows lie together in the heap (each load appends them). Migration 0004.
    __table_args__ = (
        UniqueConstraint("crater_id", "run_id"),
        *_lon_lat_checks(),
        CheckConstraint("score BETWEEN 0 AND 1", name="score_range"),
        CheckConstraint("level >= 1", name="level_positive"),
        Index(None, "geom", postgresql_using="gist"),  # default opclass: 2-D, sorted build
        Index(None, "run_id", postgresql_using="brin"),
    )


class AgeRun(Base):
    """One age-network run over the craters of one detection run."""

    __tablename__ = "age_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_name: Mapped[str] = mapped_column(Text, unique=True)
    atlas_run_id: Mapped[int] = mapped_column(ForeignKey("detection_runs.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(Text)
    code_version: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


_codes_sql = ", ".join(f"'{c}'" for c in AGE_CLASS_CODES)  # fixed codes from AgeClass, not user input


class AgeEstimate(Base):
    """The age network's class probabilities for one crater in one age run."""

    __tablename__ = "age_estimates"

    age_run_id: Mapped[int] = mapped_column(ForeignKey("age_runs.id", ondelete="CASCADE"), primary_key=True)
    crater_pk: Mapped[int] = mapped_column(ForeignKey("craters.id", ondelete="CASCADE"), primary_key=True)
    # One column per age class, oldest first; names come from etl.age_classes.PROB_COLUMNS.
    p_pnc: Mapped[float] = mapped_column(Double)
    p_nc: Mapped[float] = mapped_column(Double)
    p_ic: Mapped[float] = mapped_column(Double)
    p_ec: Mapped[float] = mapped_column(Double)
    p_cc: Mapped[float] = mapped_column(Double)
    age_class: Mapped[str] = mapped_column(Text)
    entropy: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint(f"age_class IN ({_codes_sql})", name="age_class_code"),
        Index(None, "crater_pk"),
    )


assert tuple(c for c in AgeEstimate.__table__.columns.keys() if c.startswith("p_")) == PROB_COLUMNS, \
    "age_estimates probability columns must follow etl.age_classes.PROB_COLUMNS"


class ReferenceCatalogue(Base):
    """A published crater catalogue to compare the atlas with (e.g. Robbins 2018)."""

    __tablename__ = "reference_catalogues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReferenceCrater(Base):
    __tablename__ = "reference_craters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    catalogue_id: Mapped[int] = mapped_column(ForeignKey("reference_catalogues.id", ondelete="CASCADE"))
    ref_id: Mapped[str] = mapped_column(Text(collation="C"))
    lon: Mapped[float] = mapped_column(Double)
    lat: Mapped[float] = mapped_column(Double)
    diameter_km: Mapped[float] = mapped_column(Double)
    geom = _point_column()

    __table_args__ = (
        UniqueConstraint("catalogue_id", "ref_id"),
        *_lon_lat_checks(),
        Index(None, "geom", postgresql_using="gist"),  # default opclass: 2-D, sorted build
    )
