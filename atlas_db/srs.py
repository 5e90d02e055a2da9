"""The Moon's spatial reference in the database, and the SQL functions that carry the
lunar sphere into queries.

SRID choice: PostGIS ships ``ESRI:104903`` (GCS_Moon_2000: a sphere of 1,737,400 m,
the same body as IAU_2015:30100), so no private SRID needs registering and every
PostGIS install agrees on it. Lon/lat points and polygons use it (``geom``).

Distances do *not* go through Moon ``geography``: its index paths assume Earth's
radius (an indexed ``ST_DWithin`` searches ~27 % of the radius, ``<->`` KNN fails).
Each crater instead carries a 3-D point on the unit sphere (``xyz``, SRID 0) with an
n-D GiST index: chord length is monotonic in great-circle distance, so
``ST_3DDWithin(xyz, q, chord)`` is an exact, index-assisted radius search and
``xyz <<->> q`` an exact, index-assisted nearest-neighbour order. Distances shown to
users are haversine on the lunar sphere (``deepcraters_distance_m``).
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from etl.moon import MOON_RADIUS_M, MOON_SRID

#: Unit-sphere x, y, z of a lon/lat pair as a SQL expression (cosd/sind: exact at multiples of 90 deg).
XYZ_SQL = "ST_MakePoint(cosd({lat}) * cosd({lon}), cosd({lat}) * sind({lon}), sind({lat}))"
#: Lon/lat point in the Moon's geographic CRS as a SQL expression.
GEOM_SQL = "ST_SetSRID(ST_MakePoint({lon}, {lat}), " + str(MOON_SRID) + ")"

# Haversine term h of two lon/lat pairs (degrees), for deepcraters_distance_m.
_HAV = ("(sin(radians(lat2 - lat1) / 2.0) ^ 2 "
        "+ cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2.0) ^ 2)")

# Repeatable objects: (re)created by every ``deepcraters db upgrade`` (CREATE OR REPLACE),
# so the lunar constants always come from etl.moon. All IMMUTABLE so the planner folds
# them into constants and index conditions stay index conditions.
FUNCTIONS_SQL = f"""
CREATE OR REPLACE FUNCTION deepcraters_xyz(lon float8, lat float8) RETURNS geometry
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT {XYZ_SQL.format(lon="lon", lat="lat")} $$;

CREATE OR REPLACE FUNCTION deepcraters_chord(distance_m float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT 2.0 * sin(least(distance_m / {MOON_RADIUS_M!r}, pi()) / 2.0) $$;

-- Haversine as 2 atan2(sqrt(h), sqrt(1 - h)), which equals 2 asin(sqrt(h)) on [0, 1] and needs
-- no least(1, h) clamp (abs() absorbs rounding past 1). A single expression of strict functions
-- only, so the planner inlines the call into the query instead of running the SQL-function
-- executor once per row (most of a 50 km radius query's server time went to those calls).
CREATE OR REPLACE FUNCTION deepcraters_distance_m(lon1 float8, lat1 float8, lon2 float8, lat2 float8)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT 2.0 * {MOON_RADIUS_M!r} * atan2(sqrt({_HAV}), sqrt(abs(1.0 - {_HAV}))) $$;

-- A lon/lat region (polygon or multipolygon) cut into pieces inside [-180, 180]: vertices may
-- run past +-180 (e.g. 170 .. 190) to cross the antimeridian. PL/pgSQL, not SQL: this body
-- cannot be inlined, and a SQL function re-plans its query on every call while PL/pgSQL
-- keeps the plan for the session (the region functions were most of a polygon query's time).
CREATE OR REPLACE FUNCTION deepcraters_wrap_region(region geometry) RETURNS geometry
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS
$$ BEGIN RETURN (
   SELECT ST_SetSRID(ST_Multi(ST_CollectionExtract(ST_Union(ST_Intersection(
              ST_Translate(ST_SetSRID(ST_Force2D(region), {MOON_SRID}), 360.0 * k, 0),
              ST_MakeEnvelope(-180, -90, 180, 90, {MOON_SRID}))), 3)), {MOON_SRID})
     FROM generate_series(-1, 1) AS k); END $$;

-- 3-D bounding box (on the unit sphere) of a lon/lat region, for searching the xyz index
-- with &&&. The box holds the densified boundary (0.25 deg steps) grown by 0.0025, more than
-- the half step (0.0022 rad) any boundary point can lie from a sample, plus each axis
-- point (+-x, +-y, +-z) that the region covers: where else a coordinate can peak.
CREATE OR REPLACE FUNCTION deepcraters_xyz_box(region geometry) RETURNS geometry
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS
$$ BEGIN RETURN (WITH r AS (SELECT deepcraters_wrap_region(region) AS g),
        pts AS (SELECT (ST_DumpPoints(ST_Segmentize(r.g, 0.25))).geom AS p FROM r
                UNION ALL
                SELECT ST_SetSRID(ST_MakePoint(v.x, v.y), {MOON_SRID})
                  FROM r, (VALUES (0, 0), (90, 0), (-180, 0), (-90, 0), (0, 90), (0, -90)) AS v(x, y)
                 WHERE ST_Covers(r.g, ST_SetSRID(ST_MakePoint(v.x, v.y), {MOON_SRID})))
   SELECT ST_Expand(ST_3DExtent({XYZ_SQL.format(lon="ST_X(p)", lat="ST_Y(p)")}), 0.0025)::geometry FROM pts); END $$;

CREATE OR REPLACE FUNCTION deepcraters_area_km2(region geometry) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT ST_Area(ST_Transform(ST_Segmentize(ST_Force2D(region), 0.05),
       '+proj=longlat +R={MOON_RADIUS_M!r} +over +no_defs',
       '+proj=cea +R={MOON_RADIUS_M!r} +over +no_defs')) / 1e6 $$;

CREATE OR REPLACE FUNCTION deepcraters_rim(lon float8, lat float8, diameter_km float8, n int DEFAULT 32)
RETURNS geometry LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT ST_SetSRID(ST_MakePolygon(ST_MakeLine(array_agg(
         ST_MakePoint(degrees(radians(lon) + atan2(sin(t) * sin(a) * cos(radians(lat)),
                                                   cos(a) - sin(radians(lat)) * sin(p2))),
                      degrees(p2)) ORDER BY i))), {MOON_SRID})
   FROM (SELECT diameter_km * 500.0 / {MOON_RADIUS_M!r} AS a) k,
        generate_series(0, n) AS i,
        LATERAL (SELECT 2.0 * pi() * mod(i, n) / n AS t) tt,
        LATERAL (SELECT asin(sin(radians(lat)) * cos(k.a) + cos(radians(lat)) * sin(k.a) * cos(tt.t)) AS p2) pp $$;
"""


def check_moon_srid(conn: Connection) -> None:
    """Fail clearly when the server's spatial_ref_sys lacks the Moon sphere we rely on."""
    row = conn.execute(text("SELECT srtext FROM spatial_ref_sys WHERE srid = :s"), {"s": MOON_SRID}).first()
    if row is None or "1737400" not in row[0]:
        raise RuntimeError(f"spatial_ref_sys has no GCS_Moon_2000 sphere under SRID {MOON_SRID}; "
                           "PostGIS >= 3.0 ships it as ESRI:104903")


def install_functions(conn: Connection) -> None:
    conn.exec_driver_sql(FUNCTIONS_SQL)
