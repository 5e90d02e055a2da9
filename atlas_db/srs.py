"""The Moon's spatial reference in the database, and the SQL functions that carry the
lunar sphere into queries.

SRID choice: PostGIS ships ``ESRI:104903`` (GCS_Moon_2000: a sphere of 1,737,400 m,
the same body as IAU_2015:30100), so no private SRID needs registering and every
PostGIS install agrees on it. Lon/lat points and polygons use it (``geom``).

Distances do *not* go through Moon ``geography``: its index paths assume Earth's
radius (an indexed ``ST_DWithin`` searches ~27 % of the radius, ``<->`` KNN fails).
Each crater's ``geom`` has a plain 2-D GiST index instead, and every spatial search is
two steps: the index finds the points inside lon/lat boxes that surely hold the answer
(``deepcraters_cap_boxes`` for a spherical cap, ``deepcraters_boxes`` for the pieces of
a region), then an exact test keeps the answer (haversine on the lunar sphere,
``deepcraters_distance_m``; ``ST_Covers`` for regions). Why 2-D and not an n-D index on
unit-sphere xyz points (exact ``<<->>`` ordering, used until migration 0003): a 2-D GiST
index builds from sorted input (PostGIS sort support) in 2.1 s for 1.3 million craters,
where the n-D one inserts row by row in 7.3 s, more than half of a whole load; and a
radius query reads a box of the index in 0.9 ms where the n-D box read took 2.4 ms.
k-nearest needs one more step (see ``deepcraters_nearest_craters`` in ``atlas_db.views``).
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from etl.moon import MOON_RADIUS_M, MOON_SRID

#: Lon/lat point in the Moon's geographic CRS as a SQL expression.
GEOM_SQL = "ST_SetSRID(ST_MakePoint({lon}, {lat}), " + str(MOON_SRID) + ")"

# Haversine term h of two lon/lat pairs (degrees), for deepcraters_distance_m.
_HAV = ("(sin(radians(lat2 - lat1) / 2.0) ^ 2 "
        "+ cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2.0) ^ 2)")

# Repeatable objects: (re)created by every ``deepcraters db upgrade`` (CREATE OR REPLACE),
# so the lunar constants always come from etl.moon. All IMMUTABLE so the planner folds
# them into constants and index conditions stay index conditions.
FUNCTIONS_SQL = f"""
-- Haversine as 2 atan2(sqrt(h), sqrt(1 - h)), which equals 2 asin(sqrt(h)) on [0, 1] and needs
-- no least(1, h) clamp (abs() absorbs rounding past 1). A single expression of strict functions
-- only, so the planner inlines the call into the query instead of running the SQL-function
-- executor once per row (most of a 50 km radius query's server time went to those calls).
CREATE OR REPLACE FUNCTION deepcraters_distance_m(lon1 float8, lat1 float8, lon2 float8, lat2 float8)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT 2.0 * {MOON_RADIUS_M!r} * atan2(sqrt({_HAV}), sqrt(abs(1.0 - {_HAV}))) $$;

-- A lon/lat region (polygon or multipolygon) cut into pieces inside [-180, 180]: vertices may
-- run past +-180 (e.g. 170 .. 190) to cross the antimeridian. Lon -180 and 180 are one
-- meridian and boundaries count as inside, so the cut is 1e-9 deg (0.03 mm) wider on each
-- side: a region whose edge is 180 keeps a sliver at -180 that covers the craters stored
-- there (longitudes are stored in [-180, 180)); cut exactly at +-180, that piece would be a
-- line, which a polygon union drops. The slivers add nothing measurable to an area.
-- PL/pgSQL, not SQL: this body cannot be inlined, and a SQL function re-plans its query on
-- every call while PL/pgSQL keeps the plan for the session (the region functions were most
-- of a polygon query's time).
CREATE OR REPLACE FUNCTION deepcraters_wrap_region(region geometry) RETURNS geometry
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS
$$ BEGIN RETURN (
   SELECT ST_SetSRID(ST_Multi(ST_CollectionExtract(ST_Union(ST_Intersection(
              ST_Translate(ST_SetSRID(ST_Force2D(region), {MOON_SRID}), 360.0 * k, 0),
              ST_MakeEnvelope(-180 - 1e-9, -90, 180 + 1e-9, 90, {MOON_SRID}))), 3)), {MOON_SRID})
     FROM generate_series(-1, 1) AS k); END $$;

-- Lon/lat boxes (SRID {MOON_SRID}) that together cover the spherical cap of radius_m around
-- lon/lat: one box, two where the cap crosses the antimeridian, a band of all longitudes
-- where it holds a pole. The half-width in longitude of a cap of angular radius a at latitude
-- lat is asin(sin a / cos lat) (it touches its east and west meridians off the centre's
-- parallel). Grown by a relative 1e-9 (+ 1e-9 deg) so float rounding never cuts the cap.
-- PL/pgSQL: a SQL function with a FROM clause is planned afresh in every statement that calls it.
CREATE OR REPLACE FUNCTION deepcraters_cap_boxes(lon float8, lat float8, radius_m float8) RETURNS geometry[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS
$$
DECLARE
  l float8 := lon - 360.0 * floor((lon + 180.0) / 360.0);
  a float8 := degrees(radius_m / {MOON_RADIUS_M!r}) * (1 + 1e-9) + 1e-9;
  dl float8;
BEGIN
  IF lat + a >= 90 OR lat - a <= -90 THEN
    RETURN ARRAY[ST_MakeEnvelope(-180, greatest(lat - a, -90), 180, least(lat + a, 90), {MOON_SRID})];
  END IF;
  -- a < 90 - |lat| here, so sin a < cos lat: the cap lies between the poles
  dl := degrees(asin(sind(a) / cosd(lat))) * (1 + 1e-9) + 1e-9;
  IF l - dl < -180 THEN
    RETURN ARRAY[ST_MakeEnvelope(-180, lat - a, l + dl, lat + a, {MOON_SRID}),
                 ST_MakeEnvelope(l - dl + 360, lat - a, 180, lat + a, {MOON_SRID})];
  ELSIF l + dl > 180 THEN
    RETURN ARRAY[ST_MakeEnvelope(l - dl, lat - a, 180, lat + a, {MOON_SRID}),
                 ST_MakeEnvelope(-180, lat - a, l + dl - 360, lat + a, {MOON_SRID})];
  END IF;
  RETURN ARRAY[ST_MakeEnvelope(l - dl, lat - a, l + dl, lat + a, {MOON_SRID})];
END $$;

-- The bounding box of each polygon of a (multi)polygon: what the geom index searches for a
-- region cut by deepcraters_wrap_region (one box per piece, not one box around them all,
-- which for a region across the antimeridian would be a band around the whole Moon).
CREATE OR REPLACE FUNCTION deepcraters_boxes(region geometry) RETURNS geometry[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT array_agg(ST_Envelope(d.geom)) FROM ST_Dump(region) AS d $$;

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
    if row is None or f"{MOON_RADIUS_M:.0f}" not in row[0]:
        raise RuntimeError(f"spatial_ref_sys has no GCS_Moon_2000 sphere under SRID {MOON_SRID}; "
                           "PostGIS >= 3.0 ships it as ESRI:104903")


def install_functions(conn: Connection) -> None:
    conn.exec_driver_sql(FUNCTIONS_SQL)
