"""What a radius answer costs when nothing is left to read: a floor under its latency.

Run on a benchmark database kept by ``bench_atlas_db.py --keep`` (its atlas in the buffer
cache, as a load leaves it). At each of ``--places`` random places it times, in this order:

- ``api``: ``atlas_db.queries.craters_within`` from call to DataFrame (what the benchmark's
  goals are judged on), the first call at the place;
- ``server``: PostgreSQL's planning + execution of the same statement (EXPLAIN ANALYZE,
  TIMING OFF), every page a buffer hit;
- ``transfer``: the same rows, already computed and held in a temporary table, sent by the
  same binary COPY into the same client buffer (the wire, libpq and psycopg2; no search);
- ``parse``: the client turning those bytes into the DataFrame, nearest first (the API sends
  the unordered search and sorts its rows itself);
- ``copy_out``: the server writing the same binary COPY to ``/dev/null`` (a server-side file:
  a superuser or ``pg_write_server_files``; left out elsewhere), the server's share of
  ``transfer`` (its binary output functions, one value at a time), not part of the floor.

``floor`` = server + transfer + parse at each place: the work any call at that place has to
do (search, send, decode), with no other cost. Its p50 is the typical floor; its p95 adds up
three separately measured tails, so it is no bound (``server`` p95 alone is one). With
``--against`` (a ``bench_atlas_db.py`` JSON, e.g. at 1.3 million) it prints the floor's p50
and the server's p95 against 1.5x that JSON's radius p95.

    python benchmarks/bench_atlas_db.py --n 10000000 --skip-optional --keep --out ...
    python benchmarks/bench_atlas_answer_cost.py --radius-km 50 \\
      --against benchmarks/results/atlas_db_1.3m_prewarmed.json --out ...
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas_db import queries as Q  # noqa: E402
from atlas_db.bulk import prewarm  # noqa: E402
from atlas_db.engine import get_engine, safe_url  # noqa: E402

DEFAULT_URL = "postgresql://postgres@localhost:5432/deepcraters_bench"
_FLOATS = Q._SEARCH_FLOAT + ("distance_km",)


def _copy(cur, statement: bytes) -> tuple[io.BytesIO, float]:
    buf = io.BytesIO()
    t0 = time.perf_counter()
    cur.copy_expert(statement, buf)
    return buf, time.perf_counter() - t0


def measure(conn, lons, lats, radius_km: float) -> dict[str, list[float]]:
    """Seconds of each part at each place (see the module docstring), and the answers' sizes."""
    cur = conn.connection.dbapi_connection.cursor()
    out: dict[str, list[float]] = {k: [] for k in ("api", "server", "transfer", "parse", "copy_out", "rows", "bytes")}
    cur.execute("SELECT pg_has_role('pg_write_server_files', 'USAGE') OR "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    may_write_server_files = cur.fetchone()[0]
    for _ in range(20):  # the connection's plans and caches
        Q.craters_within(conn, 0.0, 0.0, radius_km)
    for lon, lat in zip(lons, lats):
        params = {"lon": float(lon), "lat": float(lat), "radius_km": float(radius_km), "run": None}
        t0 = time.perf_counter()
        df = Q.craters_within(conn, lon, lat, radius_km)
        out["api"].append(time.perf_counter() - t0)
        cur.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + Q.CRATERS_WITHIN_UNORDERED_SQL, params)
        plan = cur.fetchone()[0][0]
        out["server"].append((plan["Planning Time"] + plan["Execution Time"]) / 1e3)
        cur.execute("DROP TABLE IF EXISTS pg_temp.answer")
        cur.execute("CREATE TEMP TABLE answer AS " + Q.CRATERS_WITHIN_UNORDERED_SQL, params)
        _copy(cur, b"COPY answer TO STDOUT WITH (FORMAT binary)")  # its pages, once
        buf, dt = _copy(cur, b"COPY answer TO STDOUT WITH (FORMAT binary)")
        out["transfer"].append(dt)
        if may_write_server_files:
            t0 = time.perf_counter()
            cur.execute("COPY answer TO '/dev/null' WITH (FORMAT binary)")
            out["copy_out"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        parsed = Q._parse_search_rows(buf.getbuffer(), Q._SEARCH_TEXT, _FLOATS, Q._NEAREST_FIRST)
        out["parse"].append(time.perf_counter() - t0)
        assert len(parsed) == len(df)
        out["rows"].append(len(df))
        out["bytes"].append(len(buf.getvalue()))
    conn.rollback()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default=DEFAULT_URL, help=f"a database loaded by bench_atlas_db.py --keep ({DEFAULT_URL})")
    p.add_argument("--radius-km", type=float, default=50.0)
    p.add_argument("--places", type=int, default=300)
    p.add_argument("--against", default=None, help="a bench_atlas_db.py JSON whose radius p95 x 1.5 is the budget")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    engine = get_engine(args.db)
    rng = np.random.default_rng(21)
    lons = rng.uniform(-180, 180, args.places)
    lats = np.degrees(np.arcsin(rng.uniform(-1, 1, args.places)))
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM craters").scalar()
        with conn.connection.dbapi_connection.cursor() as cur:
            prewarmed = prewarm(cur, "craters") / 2**20
        conn.commit()
        parts = measure(conn, lons, lats, args.radius_km)
    engine.dispose()
    floor = np.asarray(parts["server"]) + np.asarray(parts["transfer"]) + np.asarray(parts["parse"])
    res = {"database": safe_url(args.db), "n_craters": n, "radius_km": args.radius_km, "places": args.places,
           "prewarmed_mb": prewarmed, "load_average": [round(x, 2) for x in os.getloadavg()],
           "rows_mean": float(np.mean(parts["rows"])), "bytes_mean": float(np.mean(parts["bytes"]))}
    for name, values in [*((k, parts[k]) for k in ("api", "server", "transfer", "parse", "copy_out") if parts[k]),
                         ("floor", floor)]:
        ms = np.asarray(values) * 1e3
        res[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
        print(f"  {name:8s} p50 {res[name]['p50_ms']:.2f} ms  p95 {res[name]['p95_ms']:.2f} ms")
    # Each part's p50 over the craters of an answer: what one more crater in the answer costs at
    # most (a part's fixed cost, e.g. a round trip, is in it too, so these are upper bounds).
    res["p50_us_per_crater"] = {k: res[k]["p50_ms"] * 1e3 / res["rows_mean"]
                                for k in ("server", "transfer", "parse", "copy_out", "floor") if k in res}
    print("  p50 per crater of the answer: " + ", ".join(f"{k} {v:.2f} us" for k, v in res["p50_us_per_crater"].items()))
    print(f"  {n:,} craters, {res['rows_mean']:.0f} a {args.radius_km:g} km answer ({res['bytes_mean'] / 1e3:.0f} kB "
          f"of binary COPY); load average {res['load_average']}")
    if args.against:
        ref = json.loads(Path(args.against).read_text())
        budget = 1.5 * ref["radius"]["p95_ms"]
        res["against"] = {"file": Path(args.against).name, "n_craters": ref["n_craters"],
                          "radius_p95_ms": ref["radius"]["p95_ms"], "budget_ms": budget,
                          "floor_p50_over_budget": res["floor"]["p50_ms"] / budget,
                          "server_p95_over_budget": res["server"]["p95_ms"] / budget}
        print(f"  budget 1.5 x {ref['radius']['p95_ms']:.2f} ms (radius p95 at {ref['n_craters']:,}) = {budget:.2f} ms: "
              f"floor p50 {res['against']['floor_p50_over_budget']:.2f}x, server p95 "
              f"{res['against']['server_p95_over_budget']:.2f}x of it")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
