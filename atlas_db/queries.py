"""Spatial queries on the crater atlas, as Python functions returning pandas DataFrames.

They read only the user views (``crater_atlas``, ``crater_with_age``, ``reference_atlas``)
and the ``deepcraters_*`` SQL functions, so the read-only role can run every one of them
and ``docs/sql.md`` shows the same SQL. Every value is a bound parameter.

Regions (polygon, box) are lon/lat shapes with straight edges in lon/lat; a region may
cross the antimeridian by letting longitudes run past 180 (``POLYGON((170 0, 190 0, ...))``)
and a box crosses it when ``lon_min > lon_max`` (170 .. -170). Distances are great-circle
distances on the lunar sphere (R = 1,737,400 m).
"""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Connection

from etl.age_classes import AGE_CLASS_CODES, PROB_COLUMNS
from etl.moon import MOON_SRID

CRATER_COLUMNS = "run_name, crater_id, lon, lat, diameter_km, score"
#: Default size-frequency bins: the standard sqrt(2) diameter bins (Crater Analysis
#: Techniques Working Group 1979), 1/16 km .. 2048 km.
DEFAULT_SFD_DIAMETERS_KM: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-8, 23))


def _run_filter(run: str | None, column: str = "run_name") -> str:
    return f" AND {column} = %(run)s" if run is not None else ""


def _frame(conn: Connection, sql: str, params: dict) -> pd.DataFrame:
    """Run ``sql`` (``%(name)s`` placeholders, bound by the driver) and return its rows as a
    DataFrame. The rows come straight from the DBAPI cursor as tuples and go into pandas
    column by column, typed up front (float arrays, ``str`` arrays): SQLAlchemy Row objects
    and pandas' per-value type inference were most of the client time of a query returning a
    few hundred craters (1.4 ms of 3.2 ms for a 50 km radius search)."""
    result = conn.exec_driver_sql(sql, params)
    try:
        keys = [d[0] for d in result.cursor.description]
        rows = result.cursor.fetchall()
    finally:
        result.close()
    columns = list(zip(*rows)) if rows else [()] * len(keys)
    return pd.DataFrame({k: _column(v) for k, v in zip(keys, columns)})  # dicts keep the column order


def _column(values: tuple):
    if values and type(values[0]) is float:
        return np.array(values, dtype=np.float64)
    if values and type(values[0]) is str:
        return pd.array(values, dtype="str")
    return list(values)


#: The columns of the three spatial searches' rows (``deepcraters_craters_within`` and
#: ``deepcraters_nearest_craters`` add ``distance_km``): texts first, then float8, none NULL.
_SEARCH_TEXT = ("run_name", "crater_id")
_SEARCH_FLOAT = ("lon", "lat", "diameter_km", "score")
_COPY_HEADER_BYTES = 19  # "PGCOPY\n\377\r\n\0", flags int32, header extension length int32 (0)
#: The order of the radius and region searches' answers (``_CAP_ORDER`` and ``_REGION_ORDER`` in
#: atlas_db.views): the API calls their unordered forms and sorts here.
_NEAREST_FIRST = ("distance_km", "run_name", "crater_id")
_BY_RUN_AND_ID = ("run_name", "crater_id")


def _search_frame(conn: Connection, sql: str, params: dict, floats: tuple[str, ...],
                  order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """``_frame`` for a spatial search: the same DataFrame, read through binary COPY instead of
    text rows. Each float arrives as its 8 bytes and the rows become numpy arrays in one
    pass, where the cursor made and parsed a Python object per value: about half the client
    time of a radius search returning 2,000 craters. With ``order`` (column names), the rows
    are sorted by those columns here (see ``_sort_order``)."""
    cur = conn.connection.dbapi_connection.cursor()
    buf = io.BytesIO()
    try:
        cur.copy_expert(b"COPY (" + cur.mogrify(sql, params) + b") TO STDOUT WITH (FORMAT binary)", buf)
    finally:
        cur.close()
    return _parse_search_rows(buf.getbuffer(), _SEARCH_TEXT, floats, order)


def _sort_order(keys: list[np.ndarray]) -> np.ndarray:
    """The permutation that sorts rows by ``keys`` (first key first), as PostgreSQL's ORDER BY
    of the searches does: floats by value, texts as numpy bytes (``S``) of their UTF-8, which
    order byte by byte, unsigned, a prefix first: ``COLLATE "C"``. (Bytes padded to the
    column's width with NULs order the same: a text holds no NUL.) The usual answer takes one
    sort of one key: a text key that is one value throughout (one run) is skipped, and the rest
    only break ties of the first, sorted together when there are any (numpy's default sort, not
    stable, 0.23x the time of its stable sort of 2,078 distances: the keys together are unique,
    a run's crater ids too)."""
    if len(keys) > 1 and keys[0].dtype.kind == "S" and (keys[0] == keys[0][0]).all():
        keys = keys[1:]
    order = np.argsort(keys[0])
    first = keys[0][order]
    if len(keys) > 1 and (first[1:] == first[:-1]).any():
        order = np.lexsort(keys[::-1])
    return order


def _parse_search_rows(raw, texts: tuple[str, ...], floats: tuple[str, ...],
                       order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Rows of PostgreSQL's binary COPY format holding ``texts`` (UTF-8) then ``floats``
    (float8), none NULL, as a DataFrame typed like ``_frame``'s, sorted by the columns named in
    ``order`` when given (``_sort_order``; else in the order they came). When every row's texts
    have the lengths of the first row's (one run, ids of one length: the usual answer) the rows
    are one numpy record array; otherwise each row's offsets are walked once."""
    body = np.frombuffer(raw, dtype=np.uint8)[_COPY_HEADER_BYTES:-2]  # minus the int16 -1 trailer
    names = texts + floats
    if not len(body):
        return pd.DataFrame({k: [] for k in names})
    nfields = len(names)
    lengths, at = [], 2
    for _ in texts:  # the first row's text lengths
        n = int.from_bytes(body[at:at + 4], "big", signed=True)
        lengths.append(n)
        at += 4 + max(n, 0)
    fields = [("nfields", ">i2")]
    for name, n in zip(texts, lengths):
        fields += [(f"{name}__len", ">i4"), (name, f"S{n}" if n > 0 else "V0")]
    fields += [f for name in floats for f in ((f"{name}__len", ">i4"), (name, ">f8"))]
    rec_type = np.dtype(fields)
    rec = None
    if min(lengths) > 0 and len(body) % rec_type.itemsize == 0:
        rec = body.view(rec_type)
        if not ((rec["nfields"] == nfields).all() and all((rec[f"{t}__len"] == n).all() for t, n in zip(texts, lengths))
                and all((rec[f"{f}__len"] == 8).all() for f in floats)):
            rec = None
    out: dict = {}
    if rec is not None:
        for name in floats:
            out[name] = rec[name].astype(np.float64)
        texts_of = {name: rec[name] for name in texts}
        if order:  # each column gathered on its own (numpy's take of whole records is 7x slower)
            rows = _sort_order([out[k] if k in floats else texts_of[k] for k in order])
            out = {name: values[rows] for name, values in out.items()}
            texts_of = {name: values[rows] for name, values in texts_of.items()}
        return pd.DataFrame({**{name: _fixed_width_strings(texts_of[name]) for name in texts}, **out})
    # Texts of varying lengths: find each row's float block, then gather them in one step.
    data = bytes(body)
    starts, columns = [], {name: [] for name in texts}
    at = 0
    while at < len(data):
        if int.from_bytes(data[at:at + 2], "big", signed=True) != nfields:
            raise ValueError(f"binary COPY row with an unexpected field count at byte {at}")
        at += 2
        for name in texts:
            n = int.from_bytes(data[at:at + 4], "big", signed=True)
            if n < 0:
                raise ValueError(f"NULL {name} in a search answer")
            columns[name].append(data[at + 4:at + 4 + n].decode("utf-8"))
            at += 4 + n
        starts.append(at)
        at += 12 * len(floats)
    block = np.frombuffer(data, dtype=np.uint8)[np.asarray(starts)[:, None] + np.arange(12 * len(floats))]
    block = np.ascontiguousarray(block).view(np.dtype([f for name in floats
                                                         for f in ((f"{name}__len", ">i4"), (name, ">f8"))]))[:, 0]
    for name in floats:
        if not (block[f"{name}__len"] == 8).all():
            raise ValueError(f"NULL or non-float8 {name} in a search answer")
        out[name] = block[name].astype(np.float64)
    if order:
        rows = _sort_order([out[k] if k in floats else np.array([v.encode("utf-8") for v in columns[k]], dtype="S")
                            for k in order])
        out = {name: values[rows] for name, values in out.items()}
        columns = {name: [values[i] for i in rows] for name, values in columns.items()}
    return pd.DataFrame({**{name: pd.array(columns[name], dtype="str") for name in texts}, **out})


def _fixed_width_strings(col: np.ndarray):
    """A numpy bytes column whose values all have its width (``S<n>``, UTF-8) as the ``str``
    array of ``_frame``: one Arrow string array over the column's bytes, its offsets a range,
    with no Python string per value (0.16x the time of decoding through numpy ``U`` strings
    for 2,080 ids). Invalid UTF-8 raises, as decoding did."""
    n, width = len(col), col.dtype.itemsize
    data = np.ascontiguousarray(col).view(np.uint8)
    small = n * width < 2**31  # int32 offsets
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32 if small else np.int64)
    arr = pa.Array.from_buffers(pa.string() if small else pa.large_string(), n,
                                [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    arr.validate(full=True)  # UTF-8
    return pd.array(arr, dtype="str")


# --------------------------------------------------------------------------- regions


def region_wkt(polygon) -> str:
    """WKT of a lon/lat (multi)polygon given as WKT, GeoJSON text, a GeoJSON dict (geometry or
    Feature) or a shapely geometry. Raises ``ValueError`` for anything else."""
    import shapely
    from shapely.geometry import shape

    try:
        if isinstance(polygon, str):
            s = polygon.strip()
            geom = shape(_geojson_geometry(json.loads(s))) if s.startswith("{") else shapely.from_wkt(s)
        elif isinstance(polygon, dict):
            geom = shape(_geojson_geometry(polygon))
        else:
            geom = polygon
    except KeyError as exc:
        raise ValueError(f"region GeoJSON has no {exc} member") from None
    except (shapely.errors.ShapelyError, TypeError, AttributeError, IndexError) as exc:
        # GEOS' own words (e.g. "Points of LinearRing do not form a closed linestring"), no traceback
        raise ValueError(f"region is not a readable polygon: {exc}") from None
    if geom is None:
        raise ValueError("region is empty")
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise ValueError(f"region must be a Polygon or MultiPolygon, got {geom.geom_type}")
    if not geom.is_valid:
        raise ValueError(f"region polygon is not valid: {shapely.is_valid_reason(geom)}")
    minx, miny, maxx, maxy = geom.bounds
    if miny < -90 or maxy > 90:
        raise ValueError("region latitudes must lie in [-90, 90]")
    if minx < -540 or maxx > 540 or maxx - minx > 360:
        raise ValueError("region longitudes must span at most 360 degrees (use 170..190 to cross 180)")
    return geom.wkt


def _geojson_geometry(obj: dict) -> dict:
    if obj.get("type") == "Feature":
        return obj["geometry"]
    if obj.get("type") == "FeatureCollection":
        feats = obj.get("features") or []
        if len(feats) != 1:
            raise ValueError("a GeoJSON FeatureCollection region must hold exactly one feature")
        return feats[0]["geometry"]
    return obj


def box_wkt(lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> str:
    """Lon/lat box as polygon WKT; ``lon_min > lon_max`` (e.g. 170, -170) crosses the antimeridian,
    0..360 longitudes are accepted, and a width of 360 or more is the whole band of latitudes."""
    if not (-90 <= lat_min <= lat_max <= 90):
        raise ValueError("box latitudes must satisfy -90 <= lat_min <= lat_max <= 90")
    if lon_max - lon_min >= 360:
        lo, hi = -180.0, 180.0
    else:
        lo = (lon_min + 180.0) % 360.0 - 180.0
        hi = lo + (lon_max - lon_min) % 360.0
    return (f"POLYGON(({lo!r} {lat_min!r}, {hi!r} {lat_min!r}, {hi!r} {lat_max!r}, "
            f"{lo!r} {lat_max!r}, {lo!r} {lat_min!r}))")


# Region search for queries that aggregate over crater_with_age or crater_atlas: the index
# finds the boxes of the region's pieces, ST_Covers decides. The region functions are
# IMMUTABLE, so with literal arguments the planner evaluates them once, at plan time.
_REGION_SEARCH = (f"geom && ANY (deepcraters_boxes(deepcraters_wrap_region(ST_GeomFromText(%(region)s, {MOON_SRID})))) "
                  f"AND ST_Covers(deepcraters_wrap_region(ST_GeomFromText(%(region)s, {MOON_SRID})), geom)")


# --------------------------------------------------------------------------- queries
# The three point and region searches run the SQL functions of atlas_db.views (one
# definition for Python, the CLI and docs/sql.md; their plans stay cached per session).


#: Largest k of a nearest-neighbour query: the SQL function's k is an int4.
_MAX_K = 2**31 - 1


def _check_point(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"need a finite longitude and a latitude in [-90, 90], got ({lon}, {lat})")


#: The statements of the three spatial searches (``%(name)s`` parameters), their rows ordered by
#: the server (docs/sql.md).
CRATERS_WITHIN_SQL = "SELECT * FROM deepcraters_craters_within(%(lon)s, %(lat)s, %(radius_km)s, %(run)s)"
NEAREST_CRATERS_SQL = "SELECT * FROM deepcraters_nearest_craters(%(lon)s, %(lat)s, %(k)s, %(run)s)"
CRATERS_IN_REGION_SQL = f"SELECT * FROM deepcraters_craters_in_region(ST_GeomFromText(%(region)s, {MOON_SRID}), %(run)s)"
#: What the Python API sends for radius and region searches (also what a benchmark times on the
#: server): the same rows unordered, sorted into the same order by ``_parse_search_rows`` in
#: numpy, several times faster than PostgreSQL's sort (atlas_db.views). Nearest keeps the
#: server's order: it sorts to keep k rows.
CRATERS_WITHIN_UNORDERED_SQL = CRATERS_WITHIN_SQL.replace("deepcraters_craters_within(",
                                                          "deepcraters_craters_within_unordered(")
CRATERS_IN_REGION_UNORDERED_SQL = CRATERS_IN_REGION_SQL.replace("deepcraters_craters_in_region(",
                                                                "deepcraters_craters_in_region_unordered(")


def craters_within(conn: Connection, lon: float, lat: float, radius_km: float, run: str | None = None) -> pd.DataFrame:
    """Craters whose centre lies within ``radius_km`` (great circle) of lon/lat, nearest first."""
    _check_point(lon, lat)
    if not (math.isfinite(radius_km) and radius_km >= 0):
        raise ValueError(f"radius_km must be a finite distance >= 0, got {radius_km}")
    return _search_frame(conn, CRATERS_WITHIN_UNORDERED_SQL,
                         {"lon": float(lon), "lat": float(lat), "radius_km": float(radius_km), "run": run},
                         _SEARCH_FLOAT + ("distance_km",), _NEAREST_FIRST)


def nearest_craters(conn: Connection, lon: float, lat: float, k: int = 10, run: str | None = None) -> pd.DataFrame:
    """The ``k`` craters nearest to lon/lat (great circle; exact, see ``deepcraters_nearest_craters``)."""
    _check_point(lon, lat)
    if not 1 <= int(k) <= _MAX_K:
        raise ValueError(f"k must be between 1 and {_MAX_K}, got {k}")
    return _search_frame(conn, NEAREST_CRATERS_SQL,
                         {"lon": float(lon), "lat": float(lat), "k": int(k), "run": run},
                         _SEARCH_FLOAT + ("distance_km",))


def craters_in_polygon(conn: Connection, polygon, run: str | None = None) -> pd.DataFrame:
    """Craters whose centre lies in (or on the edge of) a lon/lat polygon (see ``region_wkt``)."""
    return _search_frame(conn, CRATERS_IN_REGION_UNORDERED_SQL, {"region": region_wkt(polygon), "run": run},
                         _SEARCH_FLOAT, _BY_RUN_AND_ID)


def craters_in_box(conn: Connection, lon_min: float, lat_min: float, lon_max: float, lat_max: float,
                   run: str | None = None) -> pd.DataFrame:
    """Craters in a lon/lat box, antimeridian-safe (``lon_min > lon_max`` crosses 180)."""
    return craters_in_polygon(conn, box_wkt(lon_min, lat_min, lon_max, lat_max), run)


def region_area_km2(conn: Connection, polygon) -> float:
    """Area of a lon/lat region on the lunar sphere, km^2."""
    sql = f"SELECT deepcraters_area_km2(deepcraters_wrap_region(ST_GeomFromText(%(region)s, {MOON_SRID})))"
    return float(conn.exec_driver_sql(sql, {"region": region_wkt(polygon)}).scalar())


def size_frequency(conn: Connection, polygon, diameters_km=None, run: str | None = None) -> pd.DataFrame:
    """Cumulative size-frequency distribution of a region: for each diameter D, the number of
    craters with diameter >= D and that number per km^2 of the region's area on the sphere.

    Default diameters: sqrt(2) bins, trimmed to those with at least one crater."""
    bins = sorted(float(d) for d in (diameters_km if diameters_km is not None else DEFAULT_SFD_DIAMETERS_KM))
    sql = (f"WITH reg AS (SELECT deepcraters_wrap_region(ST_GeomFromText(%(region)s, {MOON_SRID})) AS g), "
           "area AS (SELECT deepcraters_area_km2(g) AS km2 FROM reg), "
           f"sel AS (SELECT diameter_km FROM crater_atlas WHERE {_REGION_SEARCH}" + _run_filter(run) + "), "
           "bins AS (SELECT unnest(%(bins)s::float8[]) AS diameter_km) "
           "SELECT b.diameter_km, count(s.diameter_km) AS n_cumulative, "
           "count(s.diameter_km) / (SELECT km2 FROM area) AS density_per_km2, (SELECT km2 FROM area) AS area_km2 "
           "FROM bins b LEFT JOIN sel s ON s.diameter_km >= b.diameter_km "
           "GROUP BY b.diameter_km ORDER BY b.diameter_km")
    df = _frame(conn, sql, {"region": region_wkt(polygon), "bins": bins, "run": run})
    if diameters_km is None and len(df):
        df = df[df["n_cumulative"] > 0].reset_index(drop=True)
    return df


def age_class_summary(conn: Connection, polygon, age_run: str | None = None) -> pd.DataFrame:
    """Per age run and age class (oldest first, all five listed): the number of craters in the
    region assigned to the class and the mean of each class probability over them."""
    means = ", ".join(f"avg(s.{p}) AS mean_{p}" for p in PROB_COLUMNS)
    sql = (f"WITH sel AS (SELECT age_run, age_class, {', '.join(PROB_COLUMNS)} FROM crater_with_age "
           f"WHERE age_run IS NOT NULL AND {_REGION_SEARCH}" + _run_filter(age_run, "age_run") + "), "
           "runs AS (SELECT DISTINCT age_run FROM sel), "
           "classes AS (SELECT code, ord FROM unnest(%(codes)s::text[]) WITH ORDINALITY AS t(code, ord)) "
           f"SELECT runs.age_run, classes.code AS age_class, count(s.age_class) AS n_craters, {means} "
           "FROM runs CROSS JOIN classes "
           "LEFT JOIN sel s ON s.age_run = runs.age_run AND s.age_class = classes.code "
           "GROUP BY runs.age_run, classes.code, classes.ord ORDER BY runs.age_run, classes.ord")
    return _frame(conn, sql, {"region": region_wkt(polygon), "codes": list(AGE_CLASS_CODES), "run": age_run})


def craters_with_age(conn: Connection, age_run: str, age_class: str | None = None) -> pd.DataFrame:
    """Every crater dated by ``age_run`` (optionally only those of ``age_class``) with its class
    probabilities, class and entropy."""
    sql = (f"SELECT {CRATER_COLUMNS}, {', '.join(PROB_COLUMNS)}, age_class, entropy FROM crater_with_age "
           "WHERE age_run = %(age_run)s" + (" AND age_class = %(age_class)s" if age_class else "")
           + " ORDER BY crater_id")
    return _frame(conn, sql, {"age_run": age_run, "age_class": age_class})


def dated_craters_within(conn: Connection, lon: float, lat: float, radius_km: float, age_run: str,
                         age_class: str | None = None) -> pd.DataFrame:
    """Craters of ``age_run``'s atlas within ``radius_km`` of lon/lat (the cap search of
    ``craters_within``) with their ages from ``age_run``, optionally of one ``age_class``; nearest first."""
    _check_point(lon, lat)
    if not (math.isfinite(radius_km) and radius_km >= 0):
        raise ValueError(f"radius_km must be a finite distance >= 0, got {radius_km}")
    sql = ("SELECT w.*, " + ", ".join(f"a.{p}" for p in PROB_COLUMNS) + ", a.age_class, a.entropy "
           "FROM deepcraters_craters_within(%(lon)s, %(lat)s, %(radius_km)s, "
           "(SELECT atlas_run FROM age_run_info WHERE run_name = %(age_run)s)) w "
           "JOIN crater_with_age a ON a.run_name = w.run_name AND a.crater_id = w.crater_id "
           "WHERE a.age_run = %(age_run)s" + (" AND a.age_class = %(age_class)s" if age_class else "")
           + " ORDER BY w.distance_km")
    return _frame(conn, sql, {"lon": float(lon), "lat": float(lat), "radius_km": float(radius_km),
                              "age_run": age_run, "age_class": age_class})


def new_craters(conn: Connection, run: str, catalogue: str) -> pd.DataFrame:
    """Craters of detection run ``run`` that match no crater of reference ``catalogue`` under
    the rule of ``etl.matching`` (the same rule the detector's evaluator uses)."""
    sql = (f"SELECT {', '.join('a.' + c.strip() for c in CRATER_COLUMNS.split(','))} FROM crater_atlas a "
           "WHERE a.run_name = %(run)s AND NOT EXISTS (SELECT 1 FROM reference_atlas r "
           "WHERE r.catalogue = %(catalogue)s "
           "AND r.geom && ANY (deepcraters_cap_boxes(a.lon, a.lat, deepcraters_match_search_m(a.diameter_km))) "
           "AND deepcraters_is_match(a.lon, a.lat, a.diameter_km, r.lon, r.lat, r.diameter_km)) "
           "ORDER BY a.crater_id")
    return _frame(conn, sql, {"run": run, "catalogue": catalogue})


def run_list(conn: Connection) -> pd.DataFrame:
    """Every detection run and age run in the database, with its provenance and row count."""
    result = conn.exec_driver_sql(
        "SELECT 'detection' AS kind, run_name, model, config_hash, code_version, n_craters AS n_rows, created_at "
        "FROM detection_run_info UNION ALL "
        "SELECT 'age', run_name, model, config_hash, code_version, n_estimates, created_at FROM age_run_info "
        "ORDER BY kind DESC, run_name")
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
