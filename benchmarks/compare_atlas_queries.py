"""The atlas's spatial searches as a git revision wrote them ("old") against the working tree
("new"), side by side on one database: the same places, alternately, each answer compared.

The old revision's SQL functions (``atlas_db/srs.py`` and ``atlas_db/views.py`` at ``--old``,
read with ``git show``) are created as temporary functions of the session (``pg_temp.old_*``),
beside the installed new ones, over the same table: the comparison needs no second database
and leaves nothing behind. The database must be migrated by the working tree (the new
functions may read columns the old ones do not).

At each of ``--places`` random places it runs a radius (``--radius-km``), polygon
(``--polygon-deg``, the irregular 6-gons of ``bench_atlas_db.py``) and k = 10 nearest search
with each version, which goes first alternating from place to place, and records for each:
``client``, from call to DataFrame through ``atlas_db.queries``' binary COPY path (the
working tree's client code for both: for new the API function itself, which may sort the rows
of an unordered search, for old the old statement's rows as they come), and ``server``,
PostgreSQL's planning + execution of the statement each sends (EXPLAIN ANALYZE, TIMING OFF). Printed and in the
JSON: p50 / p95 of each, and the median over places of new / old.

Answers: new must return the same rows in the same order with the same lon, lat, diameter and
score (bit for bit) and distances within ``--distance-atol-km`` of the old ones (default 1e-11
km, 10 nm: both are the great-circle distance, rounded differently); every place is
compared and the count of places that differ, with the largest distance difference, is
reported (and the run fails if any differ).

    python benchmarks/compare_atlas_queries.py --old aa3dba6 \\
      --db postgresql://postgres@localhost:5432/deepcraters_bench --places 1000 \\
      --out benchmarks/results/atlas_queries_old_new_10m.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_atlas_db import random_points, random_polygon  # noqa: E402

from atlas_db import queries as Q  # noqa: E402
from atlas_db.bulk import prewarm  # noqa: E402
from atlas_db.engine import get_engine, safe_url  # noqa: E402
from etl.moon import MOON_SRID  # noqa: E402

KINDS = ("radius", "polygon", "nearest")
_FLOATS = {"radius": Q._SEARCH_FLOAT + ("distance_km",), "polygon": Q._SEARCH_FLOAT,
           "nearest": Q._SEARCH_FLOAT + ("distance_km",)}


def old_sql(revision: str) -> tuple[str, dict[str, str]]:
    """The revision's SQL functions renamed into pg_temp (``deepcraters_x`` -> ``pg_temp.old_x``),
    and its three search statements calling them."""
    texts = []
    for path in ("atlas_db/srs.py", "atlas_db/views.py"):
        source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        module = types.ModuleType(f"old_{Path(path).stem}")
        exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)  # noqa: S102 (our own history)
        texts += [getattr(module, name) for name in ("FUNCTIONS_SQL", "MATCH_FUNCTIONS_SQL", "QUERY_FUNCTIONS_SQL")
                  if hasattr(module, name)]
    sql = "\n".join(texts)
    names = set(re.findall(r"CREATE OR REPLACE FUNCTION (deepcraters_\w+)", sql))
    for name in sorted(names, key=len, reverse=True):
        sql = re.sub(rf"\b{name}\b", "pg_temp.old_" + name[len("deepcraters_"):], sql)
    statements = {
        "radius": Q.CRATERS_WITHIN_SQL.replace("deepcraters_", "pg_temp.old_"),
        "polygon": Q.CRATERS_IN_REGION_SQL.replace("deepcraters_", "pg_temp.old_"),
        "nearest": Q.NEAREST_CRATERS_SQL.replace("deepcraters_", "pg_temp.old_"),
    }
    return sql, statements


# What the working tree's API sends (radius and polygon: the unordered searches, sorted by the client).
NEW_SQL = {"radius": Q.CRATERS_WITHIN_UNORDERED_SQL, "polygon": Q.CRATERS_IN_REGION_UNORDERED_SQL,
           "nearest": Q.NEAREST_CRATERS_SQL}


def _params(kind: str, lon: float, lat: float, poly: str, radius_km: float) -> dict:
    if kind == "radius":
        return {"lon": float(lon), "lat": float(lat), "radius_km": float(radius_km), "run": None}
    if kind == "polygon":
        return {"region": Q.region_wkt(poly), "run": None}
    return {"lon": float(lon), "lat": float(lat), "k": 10, "run": None}


def _server_ms(cur, statement: str, params: dict) -> float:
    cur.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, params)
    plan = cur.fetchone()[0][0]
    return plan["Planning Time"] + plan["Execution Time"]


def _differs(old, new, atol_km: float) -> tuple[str | None, float]:
    """How two answers differ (None: the same rows in the same order, distances within
    ``atol_km``), and the largest |distance difference| (km)."""
    if set(zip(old["run_name"], old["crater_id"])) != set(zip(new["run_name"], new["crater_id"])):
        return "rows", float("nan")
    if list(old["crater_id"]) != list(new["crater_id"]) or list(old["run_name"]) != list(new["run_name"]):
        return "order", float("nan")
    for c in ("lon", "lat", "diameter_km", "score"):
        if not np.array_equal(old[c].to_numpy(), new[c].to_numpy()):
            return c, float("nan")
    if "distance_km" not in old or not len(old):
        return None, 0.0
    a, b = old["distance_km"].to_numpy(), new["distance_km"].to_numpy()
    diff = float(np.max(np.abs(a - b)))
    return (None if np.allclose(b, a, rtol=0.0, atol=atol_km) else "distance"), diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="git revision whose SQL functions are the 'old' searches")
    p.add_argument("--db", required=True, help="a database migrated by the working tree, holding an atlas")
    p.add_argument("--places", type=int, default=1000)
    p.add_argument("--radius-km", type=float, default=50.0)
    p.add_argument("--polygon-deg", type=float, default=1.0)
    p.add_argument("--distance-atol-km", type=float, default=1e-11,
                   help="largest difference of a distance between old and new, km (default 1e-11: 10 nm)")
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    create_old, old_statements = old_sql(args.old)
    rng = np.random.default_rng(args.seed)
    lons, lats = random_points(rng, args.places)
    polys = [random_polygon(rng, lo, la, args.polygon_deg) for lo, la in zip(lons, lats)]
    engine = get_engine(args.db)
    times = {v: {k: {"client": [], "server": []} for k in KINDS} for v in ("old", "new")}
    rows = {k: [] for k in KINDS}
    differing = {k: [] for k in KINDS}
    max_diff = {k: 0.0 for k in KINDS}
    api = {"radius": lambda conn, i: Q.craters_within(conn, lons[i], lats[i], args.radius_km),
           "polygon": lambda conn, i: Q.craters_in_polygon(conn, polys[i]),
           "nearest": lambda conn, i: Q.nearest_craters(conn, lons[i], lats[i], k=10)}
    load0 = [round(x, 2) for x in os.getloadavg()]
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM craters").scalar()
        cur = conn.connection.dbapi_connection.cursor()
        prewarmed_mb = prewarm(cur, "craters") / 2**20  # as a load leaves the atlas (bench_atlas_db.py)
        conn.commit()
        cur.execute(create_old)
        for i in range(20):  # both versions' plans cached, the connection warm
            for kind in KINDS:
                prm = _params(kind, lons[i], lats[i], polys[i], args.radius_km)
                Q._search_frame(conn, old_statements[kind], prm, _FLOATS[kind])
                api[kind](conn, i)
        for i in range(args.places):
            for kind in KINDS:
                prm = _params(kind, lons[i], lats[i], polys[i], args.radius_km)
                got = {}
                for version in (("old", "new") if i % 2 == 0 else ("new", "old")):
                    t0 = time.perf_counter()
                    if version == "new":
                        got[version] = api[kind](conn, i)
                    else:  # what the API function does, with the old statement (region_wkt timed too)
                        got[version] = Q._search_frame(conn, old_statements[kind],
                                                       _params(kind, lons[i], lats[i], polys[i], args.radius_km),
                                                       _FLOATS[kind])
                    times[version][kind]["client"].append(time.perf_counter() - t0)
                    statement = NEW_SQL[kind] if version == "new" else old_statements[kind]
                    times[version][kind]["server"].append(_server_ms(cur, statement, prm) / 1e3)
                how, diff = _differs(got["old"], got["new"], args.distance_atol_km)
                if how:
                    differing[kind].append({"place": i, "how": how})
                if diff == diff:
                    max_diff[kind] = max(max_diff[kind], diff)
                rows[kind].append(len(got["new"]))
        conn.rollback()
    engine.dispose()

    res = {"database": safe_url(args.db), "n_craters": n, "old_revision": args.old, "places": args.places,
           "prewarmed_mb": prewarmed_mb, "radius_km": args.radius_km, "polygon_deg": args.polygon_deg,
           "distance_atol_km": args.distance_atol_km,
           "load_average": {"start": load0, "end": [round(x, 2) for x in os.getloadavg()]}, "kinds": {}}
    print(f"[compare] {n:,} craters, {args.places} places, old = {args.old}, new = working tree; "
          f"load average {res['load_average']}")
    for kind in KINDS:
        entry = {"rows_mean": float(np.mean(rows[kind])), "places_differing": differing[kind],
                 "max_distance_difference_km": max_diff[kind]}
        for part in ("client", "server"):
            o = np.asarray(times["old"][kind][part]) * 1e3
            nw = np.asarray(times["new"][kind][part]) * 1e3
            entry[part] = {"old_p50_ms": float(np.percentile(o, 50)), "old_p95_ms": float(np.percentile(o, 95)),
                           "new_p50_ms": float(np.percentile(nw, 50)), "new_p95_ms": float(np.percentile(nw, 95)),
                           "median_new_over_old": float(np.median(nw / o))}
            e = entry[part]
            print(f"  {kind:8s} {part:6s} old p50 {e['old_p50_ms']:.3f} p95 {e['old_p95_ms']:.3f} ms | new p50 "
                  f"{e['new_p50_ms']:.3f} p95 {e['new_p95_ms']:.3f} ms | p50 {e['new_p50_ms'] / e['old_p50_ms']:.3f}x "
                  f"p95 {e['new_p95_ms'] / e['old_p95_ms']:.3f}x, per place median {e['median_new_over_old']:.3f}x")
        print(f"  {kind:8s} {entry['rows_mean']:.0f} craters an answer; places whose answers differ: "
              f"{len(differing[kind])} of {args.places} {differing[kind][:5]} "
              f"(largest distance difference {max_diff[kind]:.3g} km)")
        res["kinds"][kind] = entry
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"[compare] wrote {args.out}")
    return 1 if any(differing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
