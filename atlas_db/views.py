"""User-facing SQL: the views (what the read-only role may select), the query functions
over them (what ``atlas_db.queries`` and ``docs/sql.md`` call), and the read-only role.

Views and functions are repeatable objects: every ``deepcraters db upgrade`` re-creates
them (CREATE OR REPLACE) after the Alembic migrations, from the SQL below.
"""
from __future__ import annotations

import math

from sqlalchemy import text
from sqlalchemy.engine import Connection

from etl.age_classes import PROB_COLUMNS
from etl.matching import MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO
from etl.moon import MOON_RADIUS_M, MOON_SRID

_P = ", ".join(f"e.{p}" for p in PROB_COLUMNS)

#: name -> SELECT. Order matters only for readability (no view reads another).
VIEWS: dict[str, str] = {
    # Every crater with its detection run's provenance and centre point.
    "crater_atlas": """
        SELECT c.id AS crater_pk, r.run_name, c.crater_id, c.lon, c.lat, c.diameter_km, c.score,
               c.x0_px, c.y0_px, c.x1_px, c.y1_px, c.level, c.geom,
               r.model, r.config_hash, r.source_mosaics, r.code_version, r.created_at,
               c.unit_x, c.unit_y, c.unit_z
          FROM craters c JOIN detection_runs r ON r.id = c.run_id""",
    # One row per crater and age run (craters without an age estimate appear once, age fields NULL).
    "crater_with_age": f"""
        SELECT c.id AS crater_pk, r.run_name, c.crater_id, c.lon, c.lat, c.diameter_km, c.score,
               c.geom, ar.run_name AS age_run, {_P}, e.age_class, e.entropy,
               ar.model AS age_model, ar.config_hash AS age_config_hash, ar.code_version AS age_code_version
          FROM craters c JOIN detection_runs r ON r.id = c.run_id
          LEFT JOIN age_estimates e ON e.crater_pk = c.id
          LEFT JOIN age_runs ar ON ar.id = e.age_run_id""",
    # Rim circles as 32-gons in lon/lat (longitudes continue past +-180 so rims that straddle
    # the antimeridian stay one ring).
    "crater_rims": """
        SELECT c.id AS crater_pk, r.run_name, c.crater_id, c.diameter_km,
               deepcraters_rim(c.lon, c.lat, c.diameter_km, 32) AS rim
          FROM craters c JOIN detection_runs r ON r.id = c.run_id""",
    "reference_atlas": """
        SELECT rc.id AS ref_pk, k.name AS catalogue, rc.ref_id, rc.lon, rc.lat, rc.diameter_km, rc.geom
          FROM reference_craters rc JOIN reference_catalogues k ON k.id = rc.catalogue_id""",
    "detection_run_info": """
        SELECT r.run_name, r.model, r.config_hash, r.source_mosaics, r.code_version, r.created_at, r.loaded_at,
               (SELECT count(*) FROM craters c WHERE c.run_id = r.id) AS n_craters
          FROM detection_runs r""",
    "age_run_info": """
        SELECT a.run_name, d.run_name AS atlas_run, a.model, a.config_hash, a.code_version, a.created_at,
               a.loaded_at, (SELECT count(*) FROM age_estimates e WHERE e.age_run_id = a.id) AS n_estimates
          FROM age_runs a JOIN detection_runs d ON d.id = a.atlas_run_id""",
}

# The crater matching rule of etl.matching, in SQL (constants come from there, nowhere else).
MATCH_FUNCTIONS_SQL = f"""
CREATE OR REPLACE FUNCTION deepcraters_is_match(lon1 float8, lat1 float8, diameter1_km float8,
                                                lon2 float8, lat2 float8, diameter2_km float8)
RETURNS boolean LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT deepcraters_distance_m(lon1, lat1, lon2, lat2)
            <= {MATCH_MAX_CENTRE_DISTANCE_FRAC!r} * greatest(diameter1_km, diameter2_km) * 1000.0
      AND greatest(diameter1_km, diameter2_km) <= {MATCH_MAX_DIAMETER_RATIO!r} * least(diameter1_km, diameter2_km) $$;

-- Farthest centre distance (m) at which a crater of this diameter can match anything.
CREATE OR REPLACE FUNCTION deepcraters_match_search_m(diameter_km float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT {MATCH_MAX_CENTRE_DISTANCE_FRAC!r} * {MATCH_MAX_DIAMETER_RATIO!r} * diameter_km * 1000.0 $$;
"""

# The spatial queries, as functions over the views (SECURITY INVOKER: a caller reads only what
# it may select). PL/pgSQL keeps each statement's plan for the session, and
# plan_cache_mode = force_generic_plan makes it use that plan: left to choose, PostgreSQL
# kept planning each call afresh (a custom plan looked cheaper), and planning took 0.8-1.4 ms
# against 0.7 ms of running a 50 km radius search. The plans are the same index searches for
# any argument. The boxes and the wrapped region go into variables, computed once per call.
# The radius and region searches also SET enable_nestloop = off: their generic plans joined
# each crater to its detection run by a nested loop (an index probe of detection_runs per
# crater for regions, whose generic row estimate is 1; a Memoize for caps), where a hash of
# the few runs serves every crater; at 10 million craters, side by side in one session, the
# region search then took 0.83x the server time (332 craters an answer) and the cap search
# 0.94x (2,071). The same rows in the same order: only the join's method changes.
_SEARCH_SETTINGS = "SET plan_cache_mode = force_generic_plan SET enable_nestloop = off"
_CRATER_OUT = ("run_name text, crater_id text, lon float8, lat float8, diameter_km float8, score float8")
# The exact search of a spherical cap, given the variables at_lon, at_lat, radius_m, run, boxes
# (deepcraters_cap_boxes of the cap) and those _CAP_BAND sets: the index step, then the test.
# The test is the squared chord between unit vectors (the stored unit_x/y/z against the query
# point's at_x/y/z, six subtractions and multiplications) wherever it is clear: below chord2_in
# a crater is surely within the radius, above chord2_out surely not; only a crater in the band
# between (within 1e-6 m + 1e-9 of the radius of its edge, where the two formulas' rounding,
# about 1e-9 m, could disagree) is decided by the haversine, so the answer holds exactly the
# craters it held when the haversine tested every candidate (0.75 us a row; the chord's test
# costs a tenth of that). The distance of a crater kept comes from the same chord,
# 2R asin(c / 2), or past 90 degrees of arc, where asin loses digits, 2R atan2(c, |p + q|):
# it agrees with deepcraters_distance_m to about 1e-9 m (tests: 1e-9 relative). OFFSET 0 keeps
# the subquery a subquery, so each candidate's chord is computed once: flattened, the planner
# evaluates it in the filter and again for the output of every crater kept.
_CAP_SEARCH = f"""SELECT s.run_name, s.crater_id::text, s.lon, s.lat, s.diameter_km, s.score,
         CASE WHEN s.chord2 <= 2.0 THEN {2.0 * MOON_RADIUS_M!r} * asin(sqrt(s.chord2) * 0.5)
              ELSE {2.0 * MOON_RADIUS_M!r} * atan2(sqrt(s.chord2), sqrt((s.unit_x + at_x) * (s.unit_x + at_x)
                   + (s.unit_y + at_y) * (s.unit_y + at_y) + (s.unit_z + at_z) * (s.unit_z + at_z))) END / 1000.0
    FROM (SELECT a.run_name, a.crater_id, a.lon, a.lat, a.diameter_km, a.score, a.unit_x, a.unit_y, a.unit_z,
                 (a.unit_x - at_x) * (a.unit_x - at_x) + (a.unit_y - at_y) * (a.unit_y - at_y)
                 + (a.unit_z - at_z) * (a.unit_z - at_z) AS chord2
            FROM crater_atlas a
           WHERE a.geom && ANY (boxes) AND (run IS NULL OR a.run_name = run) OFFSET 0) s
   WHERE s.chord2 <= chord2_in
      OR (s.chord2 <= chord2_out AND deepcraters_distance_m(s.lon, s.lat, at_lon, at_lat) <= radius_m)"""
# The searches' order: nearest first for caps, then (and for regions) by run name and crater id,
# byte by byte (COLLATE "C": the database's C.UTF-8 orders the same, by code point, and any other
# database then orders as atlas_db.queries orders the rows of the unordered searches it calls).
_CAP_ORDER = '\n   ORDER BY 7, s.run_name COLLATE "C", 2'
_REGION_ORDER = '\n   ORDER BY a.run_name COLLATE "C", 2'
# The variables of _CAP_SEARCH's test (declared float8), given at_lon, at_lat and radius_m. The
# query point's unit vector is computed as the stored ones are (models.UNIT_VECTOR_SQL). Past a
# quarter of the Moon's circumference the band is everything: every candidate is decided by the
# haversine, as before (such caps hold most of the atlas, and near the antipode both formulas
# lose digits).
_CAP_BAND = f"""at_x := cosd(at_lat) * cosd(at_lon);
  at_y := cosd(at_lat) * sind(at_lon);
  at_z := sind(at_lat);
  IF radius_m <= {0.5 * math.pi * MOON_RADIUS_M!r} THEN
    chord2_in := CASE WHEN radius_m * (1 - 1e-9) - 1e-6 > 0
                      THEN (2.0 * sin((radius_m * (1 - 1e-9) - 1e-6) / {2.0 * MOON_RADIUS_M!r})) ^ 2 ELSE -1 END;
    chord2_out := (2.0 * sin((radius_m * (1 + 1e-9) + 1e-6) / {2.0 * MOON_RADIUS_M!r})) ^ 2;
  ELSE
    chord2_in := -1;
    chord2_out := 'Infinity';
  END IF;"""
_CAP_VARIABLES = "at_x float8; at_y float8; at_z float8; chord2_in float8; chord2_out float8;"


def _within_function(name: str, order: str, comment: str) -> str:
    """The cap search as a function: ``name``, its rows in ``order`` (an ORDER BY clause, or "")."""
    return f"""
-- {comment}
CREATE OR REPLACE FUNCTION {name}(at_lon float8, at_lat float8, radius_km float8, run text DEFAULT NULL)
RETURNS TABLE ({_CRATER_OUT}, distance_km float8) LANGUAGE plpgsql STABLE PARALLEL SAFE
{_SEARCH_SETTINGS} AS
$$
#variable_conflict use_column
DECLARE
  radius_m float8 := radius_km * 1000.0;
  boxes geometry[];
  {_CAP_VARIABLES}
BEGIN
  IF NOT coalesce(at_lat BETWEEN -90 AND 90 AND radius_km >= 0 AND radius_km < 'Infinity'
                  AND at_lon < 'Infinity' AND at_lon > '-Infinity', false) THEN  -- NULL, NaN: refused too
    RAISE EXCEPTION '{name}: need finite lon, lat in [-90, 90] and radius_km >= 0, got (%, %, %)',
      at_lon, at_lat, radius_km USING ERRCODE = 'invalid_parameter_value';
  END IF;
  boxes := deepcraters_cap_boxes(at_lon, at_lat, radius_m);
  {_CAP_BAND}
  RETURN QUERY {_CAP_SEARCH}{order};
END $$;"""


def _region_function(name: str, order: str, comment: str) -> str:
    """The region search as a function: ``name``, its rows in ``order`` (an ORDER BY clause, or "")."""
    return f"""
-- {comment}
CREATE OR REPLACE FUNCTION {name}(region geometry, run text DEFAULT NULL)
RETURNS TABLE ({_CRATER_OUT}) LANGUAGE plpgsql STABLE PARALLEL SAFE
{_SEARCH_SETTINGS} AS
$$
#variable_conflict use_column
DECLARE
  wrapped geometry := deepcraters_wrap_region(region);
  boxes geometry[] := deepcraters_boxes(wrapped);
BEGIN
  RETURN QUERY
  SELECT a.run_name, a.crater_id::text, a.lon, a.lat, a.diameter_km, a.score
    FROM crater_atlas a
   WHERE a.geom && ANY (boxes) AND ST_Covers(wrapped, a.geom) AND (run IS NULL OR a.run_name = run){order};
END $$;"""


# The Python API (atlas_db.queries) calls the *_unordered searches and orders their rows itself
# (numpy, before the DataFrame is made; the same order, tested): PostgreSQL's sort, which copies
# each row into its memory, took about 0.3 us a crater of a 50 km cap and 0.6 us of a region,
# numpy's well under 0.1 us (at 10 million craters, quiet, 300 places, same answers: server
# p50 1.56 against 1.92 ms for a 50 km cap of 2,071 craters, 0.60 against 0.75 ms for a 1-degree
# polygon of 335; benchmarks/results/atlas_queries_sort_quiet4.json, docs/scale.md).
QUERY_FUNCTIONS_SQL = (
    _within_function("deepcraters_craters_within", _CAP_ORDER,
                     "Craters whose centre lies within radius_km (great circle) of at_lon/at_lat, nearest first.")
    + _within_function("deepcraters_craters_within_unordered", "",
                       "The same rows as deepcraters_craters_within, in no particular order.")
    + f"""
-- The k craters nearest to at_lon/at_lat. Any k craters bound the distance of the k-th
-- nearest, so: take the k nearest in plain lon/lat (an index-ordered scan, cheap but not
-- great-circle order), let the farthest of them on the sphere set a radius, and rank every
-- crater within that radius exactly. The bound is loose only where lon/lat distorts (near
-- the poles, across the antimeridian): more candidates, never a wrong answer.
CREATE OR REPLACE FUNCTION deepcraters_nearest_craters(at_lon float8, at_lat float8, k integer DEFAULT 10,
                                                       run text DEFAULT NULL)
RETURNS TABLE ({_CRATER_OUT}, distance_km float8) LANGUAGE plpgsql STABLE PARALLEL SAFE
SET plan_cache_mode = force_generic_plan AS
$$
#variable_conflict use_column
DECLARE
  q geometry := ST_SetSRID(ST_MakePoint(at_lon - 360.0 * floor((at_lon + 180.0) / 360.0), at_lat), {MOON_SRID});
  radius_m float8;  -- the bound
  boxes geometry[];
  {_CAP_VARIABLES}
BEGIN
  IF NOT coalesce(at_lat BETWEEN -90 AND 90 AND k >= 1 AND at_lon < 'Infinity' AND at_lon > '-Infinity', false) THEN
    RAISE EXCEPTION 'deepcraters_nearest_craters: need finite lon, lat in [-90, 90] and k >= 1, got (%, %, %)',
      at_lon, at_lat, k USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT max(deepcraters_distance_m(s.lon, s.lat, at_lon, at_lat)) INTO radius_m
    FROM (SELECT a.lon, a.lat FROM crater_atlas a WHERE run IS NULL OR a.run_name = run
           ORDER BY a.geom <-> q LIMIT k) s;
  IF radius_m IS NULL THEN
    RETURN;
  END IF;
  boxes := deepcraters_cap_boxes(at_lon, at_lat, radius_m);
  {_CAP_BAND}
  RETURN QUERY {_CAP_SEARCH}{_CAP_ORDER} LIMIT k;
END $$;
"""
    + _region_function("deepcraters_craters_in_region", _REGION_ORDER,
                       "Craters whose centre lies in (or on the edge of) a lon/lat region (vertices may run past\n"
                       "-- 180 to cross the antimeridian, see deepcraters_wrap_region), by run name and crater id.")
    + _region_function("deepcraters_craters_in_region_unordered", "",
                       "The same rows as deepcraters_craters_in_region, in no particular order."))
READER_ROLE = "deepcraters_reader"


def install_views(conn: Connection) -> None:
    from psycopg2 import sql

    cur = conn.connection.dbapi_connection.cursor()
    cur.execute(MATCH_FUNCTIONS_SQL)
    for name, select in VIEWS.items():
        cur.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS ").format(sql.Identifier(name)) + sql.SQL(select))
    cur.execute(QUERY_FUNCTIONS_SQL)


def ensure_reader_role(conn: Connection, role: str = READER_ROLE, password: str | None = None) -> None:
    """Create (if needed) a login role that can SELECT the views above and nothing else in this
    database.

    What PUBLIC holds in this database is taken from PUBLIC, because a role cannot be denied
    what PUBLIC has: TEMPORARY on the database (temporary tables and functions) and CREATE on
    schema ``public`` (PostgreSQL < 15 grants it). The database owner and superusers keep
    theirs, and the role running this keeps TEMPORARY (loads stage rows in temporary tables);
    any other role that loads needs it granted (docs/sql.md). Other databases of the cluster
    are not touched: PUBLIC may CONNECT to each by default, which only their administrator
    should revoke (docs/sql.md says how).

    Its sessions are read-only by default as a second guard. The password, if any, reaches
    the server only as a SCRAM-SHA-256 verifier computed here (libpq), so no statement, and
    no server log of statements, holds it in clear; it is never echoed."""
    from psycopg2 import errors, sql
    from psycopg2.extensions import encrypt_password

    dbapi = conn.connection.dbapi_connection
    cur = dbapi.cursor()
    ident = sql.Identifier(role)
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
    if not exists:
        cur.execute("SAVEPOINT create_role")
        try:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        except (errors.DuplicateObject, errors.UniqueViolation):  # created meanwhile by a concurrent session
            cur.execute("ROLLBACK TO SAVEPOINT create_role")
        cur.execute("RELEASE SAVEPOINT create_role")
    if password is not None:
        verifier = encrypt_password(password, role, dbapi, "scram-sha-256")
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
    cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
    db = sql.Identifier(conn.execute(text("SELECT current_database()")).scalar())
    cur.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO CURRENT_USER").format(db))
    cur.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(db))
    cur.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, ident))
    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, ident))
    cur.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(ident))
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
    cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(ident))
    cur.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(ident))
    for name in VIEWS:
        cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(name), ident))
