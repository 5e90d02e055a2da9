"""Where the atlas's radius and region searches spend their server time, on a database kept by
``bench_atlas_db.py --keep`` (or any database migrated by this tree and holding an atlas).

Three parts, all on the server (no client, no wire), printed and written as JSON:

1. ``per_row``: the cost of one test per crater, over the first ``--rows`` craters of the
   table (a sequential scan, no parallel workers): the haversine (``deepcraters_distance_m``,
   what the cap search tested every candidate with up to migration 0005), the squared chord
   between the stored unit vectors (what it tests now), and ``ST_Covers`` of a 1-degree
   polygon; each minus the same scan summing one column, median of ``--repeats`` alternated runs.
2. ``ablations``: the installed ``deepcraters_craters_within`` (50 km) and
   ``deepcraters_craters_in_region`` (the 1-degree 6-gons of ``bench_atlas_db.py``) against
   copies of themselves with one part changed (temporary functions built from their own
   definitions): no ORDER BY; the craters table in place of the ``crater_atlas`` view (no join
   to the runs; not an answer the reader role could get); the nested-loop join the planner
   picks by itself; the haversine as the cap's test. Each is called ``--reps`` times in a
   server-side loop at each of ``--places`` places, in a shuffled order; reported: the median
   over places of its time over the installed function's (the ablations that drop a part give
   that part's share, the others what the installed choice saves).
3. ``plans``: EXPLAIN (ANALYZE, BUFFERS) of both searches' generic plans at one place.

    python benchmarks/profile_atlas_queries.py --db postgresql://postgres@localhost:5432/deepcraters_bench \\
      --out benchmarks/results/atlas_query_profile_10m.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_atlas_db import random_points, random_polygon  # noqa: E402

from atlas_db.engine import get_engine, safe_url  # noqa: E402
from etl.moon import MOON_RADIUS_M, MOON_SRID  # noqa: E402

_CHORD = ("(unit_x - %(x)s) * (unit_x - %(x)s) + (unit_y - %(y)s) * (unit_y - %(y)s) "
          "+ (unit_z - %(z)s) * (unit_z - %(z)s)")
_HAVERSINE_TEST = "deepcraters_distance_m(s.lon, s.lat, at_lon, at_lat) <= radius_m"


def _exec_ms(cur, sql: str, params: dict | None = None) -> float:
    cur.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, params)
    return cur.fetchone()[0][0]["Execution Time"]


def per_row(cur, rows: int, repeats: int, polygon: str) -> dict:
    lon, lat = 20.5, -10.0
    x, y, z = (float(v) for v in (np.cos(np.radians(lat)) * np.cos(np.radians(lon)),
                                  np.cos(np.radians(lat)) * np.sin(np.radians(lon)), np.sin(np.radians(lat))))
    scan = f"(SELECT lon, lat, unit_x, unit_y, unit_z, geom FROM craters LIMIT {int(rows)}) c"
    tests = {
        "scan": f"SELECT sum(lon) FROM {scan}",
        "haversine": f"SELECT sum(deepcraters_distance_m(lon, lat, {lon}, {lat})) FROM {scan}",
        "squared_chord": f"SELECT sum({_CHORD % {'x': x, 'y': y, 'z': z}}) FROM {scan}",
        "st_covers": f"SELECT count(*) FILTER (WHERE ST_Covers(ST_GeomFromText('{polygon}', {MOON_SRID}), geom)) "
                     f"FROM {scan}",
    }
    cur.execute("SET max_parallel_workers_per_gather = 0")
    ms: dict[str, list[float]] = {k: [] for k in tests}
    for _ in range(repeats):
        for k in random.sample(list(tests), len(tests)):
            ms[k].append(_exec_ms(cur, tests[k]))
    cur.execute("RESET max_parallel_workers_per_gather")
    base = statistics.median(ms["scan"])
    return {"rows": rows, "scan_ms_median": base, **{
        f"{k}_us_per_row": (statistics.median(v) - base) * 1e3 / rows for k, v in ms.items() if k != "scan"}}


def _variants(cur) -> dict[str, tuple[str, str]]:
    """name -> (kind, temporary function), copies of the installed functions with one part changed."""
    defs = {}
    for kind, sig in (("radius", "deepcraters_craters_within(float8,float8,float8,text)"),
                      ("polygon", "deepcraters_craters_in_region(geometry,text)")):
        cur.execute("SELECT pg_get_functiondef(%s::regprocedure)", (sig,))
        defs[kind] = (sig.split("(")[0], cur.fetchone()[0])
    no_view = [("FROM crater_atlas a", "FROM craters a"),
               ("a.run_name, a.crater_id", "a.run_id::text AS run_name, a.crater_id"),
               ("OR a.run_name = run", "OR a.run_id::text = run"),
               ('ORDER BY a.run_name COLLATE "C"', 'ORDER BY a.run_id::text COLLATE "C"')]
    edits = {
        "installed": [],
        "no_order_by": [("ORDER BY 7, 1, 2", ""), ("ORDER BY 1, 2", ""),  # before the COLLATE "C" order
                        ('ORDER BY 7, s.run_name COLLATE "C", 2', ""), ('ORDER BY a.run_name COLLATE "C", 2', "")],
        "no_view_join": no_view,
        "nested_loop_join": [(" SET enable_nestloop TO 'off'", "")],
        "haversine_test": [("s.chord2 <= chord2_in\n      OR (s.chord2 <= chord2_out AND ", "("), ],
    }
    out = {}
    for kind, (name, body) in defs.items():
        for label, changes in edits.items():
            text = body
            for old, new in changes:
                text = text.replace(old, new)
            if label != "installed" and text == body:
                continue  # the change does not apply to this search
            temp = f"prof_{kind}_{label}"
            cur.execute(text.replace(f"public.{name}", f"pg_temp.{temp}"))
            out[f"{kind}/{label}"] = (kind, f"pg_temp.{temp}")
    return out


def ablations(cur, places: int, reps: int, radius_km: float, polygon_deg: float, seed: int) -> dict:
    variants = _variants(cur)
    cur.execute("""CREATE OR REPLACE FUNCTION pg_temp.prof_loop(f text, kind text, reps int, lon float8, lat float8,
                                                      radius_km float8, region geometry) RETURNS float8
                   LANGUAGE plpgsql AS $$
                   DECLARE t0 timestamptz := clock_timestamp(); n bigint;
                   BEGIN
                     FOR i IN 1..reps LOOP
                       IF kind = 'radius' THEN
                         EXECUTE format('SELECT count(*) FROM %s($1, $2, $3)', f) INTO n USING lon, lat, radius_km;
                       ELSE
                         EXECUTE format('SELECT count(*) FROM %s($1)', f) INTO n USING region;
                       END IF;
                     END LOOP;
                     RETURN extract(epoch FROM clock_timestamp() - t0) * 1e3 / reps;
                   END $$""")
    rng = np.random.default_rng(seed)
    lons, lats = random_points(rng, places)
    polys = [random_polygon(rng, lo, la, polygon_deg) for lo, la in zip(lons, lats)]
    ms: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(places):
        for name in random.sample(list(variants), len(variants)):
            kind, fn = variants[name]
            cur.execute(f"SELECT pg_temp.prof_loop(%s, %s, %s, %s, %s, %s, ST_GeomFromText(%s, {MOON_SRID}))",
                        (fn, kind, reps, float(lons[i]), float(lats[i]), radius_km, polys[i]))
            ms[name].append(cur.fetchone()[0])
    out = {}
    for name, values in ms.items():
        kind = variants[name][0]
        base = ms[f"{kind}/installed"]
        out[name] = {"median_ms": statistics.median(values),
                     "median_over_installed": statistics.median([a / b for a, b in zip(values, base)])}
    return out


def plans(cur, radius_km: float, polygon: str) -> dict:
    """Generic plans (as the functions run them) of the two searches' statements, at one place."""
    cur.execute("SET plan_cache_mode = force_generic_plan")
    cur.execute("SET enable_nestloop = off")
    out = {}
    cur.execute(f"""PREPARE prof_region(geometry, geometry[], text) AS
        SELECT a.run_name, a.crater_id::text, a.lon, a.lat, a.diameter_km, a.score FROM crater_atlas a
         WHERE a.geom && ANY ($2) AND ST_Covers($1, a.geom) AND ($3 IS NULL OR a.run_name = $3) ORDER BY 1, 2""")
    cur.execute(f"""EXPLAIN (ANALYZE, BUFFERS) EXECUTE prof_region(
        deepcraters_wrap_region(ST_GeomFromText(%(p)s, {MOON_SRID})),
        deepcraters_boxes(deepcraters_wrap_region(ST_GeomFromText(%(p)s, {MOON_SRID}))), NULL)""", {"p": polygon})
    out["polygon"] = [r[0] for r in cur.fetchall()]
    lon, lat, m = 20.5, -10.0, radius_km * 1000.0
    x, y, z = (float(v) for v in (np.cos(np.radians(lat)) * np.cos(np.radians(lon)),
                                  np.cos(np.radians(lat)) * np.sin(np.radians(lon)), np.sin(np.radians(lat))))
    cur.execute(f"""PREPARE prof_cap(geometry[], float8, float8, float8, float8, float8, float8, text) AS
        SELECT s.run_name, s.crater_id::text, s.lon, s.lat, s.diameter_km, s.score,
               {2 * MOON_RADIUS_M!r} * asin(sqrt(s.chord2) * 0.5) / 1000.0
          FROM (SELECT a.run_name, a.crater_id, a.lon, a.lat, a.diameter_km, a.score,
                       (a.unit_x - $2) * (a.unit_x - $2) + (a.unit_y - $3) * (a.unit_y - $3)
                       + (a.unit_z - $4) * (a.unit_z - $4) AS chord2
                  FROM crater_atlas a WHERE a.geom && ANY ($1) AND ($8 IS NULL OR a.run_name = $8) OFFSET 0) s
         WHERE s.chord2 <= $5 OR (s.chord2 <= $6 AND deepcraters_distance_m(s.lon, s.lat, {lon}, {lat}) <= $7)
         ORDER BY 7, 1, 2""")
    c_in = (2 * np.sin((m * (1 - 1e-9) - 1e-6) / (2 * MOON_RADIUS_M))) ** 2
    c_out = (2 * np.sin((m * (1 + 1e-9) + 1e-6) / (2 * MOON_RADIUS_M))) ** 2
    cur.execute("EXPLAIN (ANALYZE, BUFFERS) EXECUTE prof_cap(deepcraters_cap_boxes(%s, %s, %s), "
                "%s, %s, %s, %s, %s, %s, NULL)", (lon, lat, m, x, y, z, float(c_in), float(c_out), m))
    out["radius"] = [r[0] for r in cur.fetchall()]
    cur.execute("DEALLOCATE ALL")
    cur.execute("RESET plan_cache_mode")
    cur.execute("RESET enable_nestloop")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, help="a database holding an atlas, migrated by this tree")
    p.add_argument("--rows", type=int, default=1_000_000, help="craters scanned for the per-row costs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--places", type=int, default=20)
    p.add_argument("--reps", type=int, default=20, help="calls of each variant at each place")
    p.add_argument("--radius-km", type=float, default=50.0)
    p.add_argument("--polygon-deg", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=41)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    random.seed(args.seed)
    engine = get_engine(args.db)
    polygon = random_polygon(np.random.default_rng(args.seed), 20.5, -10.0, args.polygon_deg)
    res = {"database": safe_url(args.db), "load_average": {"start": [round(x, 2) for x in os.getloadavg()]}}
    with engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        res["n_craters"] = conn.exec_driver_sql("SELECT count(*) FROM craters").scalar()
        res["plans"] = plans(cur, args.radius_km, polygon)
        res["per_row"] = per_row(cur, args.rows, args.repeats, polygon)
        res["ablations"] = ablations(cur, args.places, args.reps, args.radius_km, args.polygon_deg, args.seed)
        conn.rollback()
    engine.dispose()
    res["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    for kind in ("radius", "polygon"):
        print(f"[profile] {kind}: generic plan at one place\n  " + "\n  ".join(res["plans"][kind]))
    pr = res["per_row"]
    print(f"[profile] per crater, over {pr['rows']:,} rows (minus the scan, {pr['scan_ms_median']:.0f} ms): "
          f"haversine {pr['haversine_us_per_row']:.3f} us, squared chord {pr['squared_chord_us_per_row']:.3f} us, "
          f"ST_Covers {pr['st_covers_us_per_row']:.3f} us")
    for name, v in res["ablations"].items():
        print(f"[profile] {name:26s} median {v['median_ms']:.3f} ms a call, "
              f"{v['median_over_installed']:.3f}x the installed")
    print(f"[profile] {res['n_craters']:,} craters; load average {res['load_average']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"[profile] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
