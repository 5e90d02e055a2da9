"""The atlas's queries on two servers at once: one as ``make db`` sizes it (``shared_buffers``
25 % of RAM, the load's prewarm) and one with Debian's defaults (128 MB), the same atlas
loaded into each, the same queries at the same places alternately, so both see the same
machine at the same moments.

The second server is a scratch cluster on another port, for example (Debian, as root):

    pg_createcluster 15 bench128 --port 5434 -- --auth-local=trust --auth-host=trust
    pg_ctlcluster 15 bench128 start      # Debian's defaults: shared_buffers = 128MB
    python benchmarks/compare_atlas_buffers.py --n 10000000 \\
      --other postgresql://postgres@localhost:5434/deepcraters_bench_buffers --out ...
    pg_dropcluster --stop 15 bench128

Both databases are dropped and re-created (their names must contain "bench"). Each server
gets the same load (``etl.load.load_atlas``, which prewarms what fits in half of its
``shared_buffers``: everything on the first, next to nothing on the second), then VACUUM
ANALYZE, then for each of ``--queries`` random places a radius (``--radius-km``), polygon and
k = 10 nearest query on each server in turn (which server goes first alternates), through the
Python API from call to DataFrame, the first call at each place, as ``bench_atlas_db.py``
times them. Reported per server: p50 / p95 of each kind and the blocks its queries read from
outside ``shared_buffers``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_atlas_db import (_BLOCKS_SQL, load_average, random_points, random_polygon,  # noqa: E402
                            recreate_database, drop_database)

from atlas_db import queries as Q  # noqa: E402
from atlas_db.engine import get_engine, safe_url  # noqa: E402
from atlas_db.synthetic import atlas_provenance, synthetic_atlas  # noqa: E402
from etl.contracts import write_atlas  # noqa: E402
from etl.load import load_atlas  # noqa: E402

DEFAULT_URL = "postgresql://postgres@localhost:5432/deepcraters_bench"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--db", default=DEFAULT_URL, help=f"the server as make db sizes it ({DEFAULT_URL})")
    p.add_argument("--other", required=True, help="a database on the server with Debian's default settings")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--radius-km", type=float, default=50.0)
    p.add_argument("--polygon-deg", type=float, default=1.0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from sqlalchemy.engine import make_url

    servers = {"make_db": args.db, "debian_default": args.other}
    for url in servers.values():
        if "bench" not in (make_url(url).database or ""):
            p.error("this drops its databases: use names that contain 'bench'")
    res: dict = {"n_craters": args.n, "queries": args.queries, "radius_km": args.radius_km,
                 "polygon_deg": args.polygon_deg, "load_average": {"start": load_average()}, "servers": {}}
    workdir = Path(tempfile.mkdtemp(prefix="compare_buffers_"))
    path = workdir / "atlas.parquet"
    run = "bench-buffers"
    write_atlas(synthetic_atlas(args.n, run, 2018), path, atlas_provenance(run))
    engines = {}
    for name, url in servers.items():
        recreate_database(url)
        engines[name] = get_engine(url)
        result = load_atlas(path, engine=engines[name])
        with engines[name].connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM ANALYZE craters")
            settings = dict(conn.exec_driver_sql(
                "SELECT name, current_setting(name) FROM unnest(ARRAY['shared_buffers', 'max_wal_size', "
                "'shared_preload_libraries']) AS name").fetchall())
        res["servers"][name] = {"database": safe_url(url), "settings": settings, "load_s": result.seconds,
                                "load_prewarmed_mb": result.prewarmed_mb}
        print(f"[compare] {name}: {settings}; loaded {args.n:,} craters in {result.seconds:.1f} s, "
              f"{result.prewarmed_mb:.0f} MB prewarmed")
    path.unlink()
    workdir.rmdir()

    rng = np.random.default_rng(7)
    lons, lats = random_points(rng, args.queries)
    polys = [random_polygon(rng, lo, la, args.polygon_deg) for lo, la in zip(lons, lats)]
    times = {name: {"radius": [], "polygon": [], "nearest": []} for name in servers}
    conns = {name: engines[name].connect() for name in servers}
    blocks0 = {}
    for name, conn in conns.items():
        for _ in range(20):
            Q.nearest_craters(conn, 0.0, 0.0, k=10)
        blocks0[name] = [int(v) for v in conn.exec_driver_sql(_BLOCKS_SQL).one()]
    res["load_average"]["before_queries"] = load_average()
    calls = {"radius": lambda c, i: Q.craters_within(c, lons[i], lats[i], args.radius_km),
             "polygon": lambda c, i: Q.craters_in_polygon(c, polys[i]),
             "nearest": lambda c, i: Q.nearest_craters(c, lons[i], lats[i], k=10)}
    order = list(servers)
    for i in range(args.queries):
        for kind, call in calls.items():
            for name in (order if i % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                call(conns[name], i)
                times[name][kind].append(time.perf_counter() - t0)
    res["load_average"]["after_queries"] = load_average()
    for name, conn in conns.items():
        fetched, hit = (int(v) for v in conn.exec_driver_sql(_BLOCKS_SQL).one())
        conn.close()
        out = res["servers"][name]
        out["blocks_read_from_os_per_place"] = ((fetched - blocks0[name][0]) - (hit - blocks0[name][1])) / args.queries
        out["blocks_fetched_per_place"] = (fetched - blocks0[name][0]) / args.queries
        for kind, seconds in times[name].items():
            ms = np.asarray(seconds) * 1e3
            out[kind] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                         "mean_ms": float(ms.mean())}
        print(f"[compare] {name}: " + ", ".join(
            f"{kind} p50 {out[kind]['p50_ms']:.2f} p95 {out[kind]['p95_ms']:.2f} ms" for kind in calls)
              + f"; {out['blocks_read_from_os_per_place']:.1f} of {out['blocks_fetched_per_place']:.0f} blocks "
                "a place read from outside shared_buffers")
    for name, url in servers.items():
        engines[name].dispose()
        drop_database(url)
    res["load_average"]["end"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"[compare] load average {res['load_average']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
