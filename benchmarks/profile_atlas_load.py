"""Where a bulk load of a new atlas run spends its time, stage by stage.

Client stages (timed apart, one after another): reading the Parquet file, validating it,
the Z-order sort, and encoding every row for binary COPY. Then the load itself
(``atlas_db.bulk.load_atlas_run`` into an empty table, the bulk path), with each statement it
sends timed and the WAL it wrote (``pg_current_wal_insert_lsn`` before and after): the COPY
(encoding overlapped with it), the key and index rebuilds, and ANALYZE. Writes JSON.

It works in its own database (default ``deepcraters_profile_bench``), which it drops and
re-creates, and drops again at the end.

    python benchmarks/profile_atlas_load.py --n 3000000 --out benchmarks/results/atlas_load_profile_3m.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg2
import psycopg2.extensions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import atlas_db.bulk as B  # noqa: E402
from atlas_db.engine import get_engine, safe_url  # noqa: E402
from atlas_db.synthetic import atlas_provenance, synthetic_atlas  # noqa: E402
from bench_atlas_db import drop_database, load_average, recreate_database  # noqa: E402
from etl.contracts import ATLAS_COLUMNS, read_atlas, validate_atlas, write_atlas  # noqa: E402

DEFAULT_URL = "postgresql://postgres@localhost:5432/deepcraters_profile_bench"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3_000_000)
    ap.add_argument("--db", default=DEFAULT_URL)
    ap.add_argument("--out", default="benchmarks/results/atlas_load_profile.json")
    args = ap.parse_args(argv)
    if "bench" not in args.db.rsplit("/", 1)[-1]:
        ap.error("the profile drops its database: use one whose name contains 'bench'")
    res: dict = {"n": args.n, "cpus": os.cpu_count(), "load_average": {"start": load_average()}}
    run = "profile-run"
    prov = atlas_provenance(run)
    with tempfile.TemporaryDirectory(prefix="profile_load_") as tmp:
        path = Path(tmp) / "atlas.parquet"
        write_atlas(synthetic_atlas(args.n, run, 2018), path, prov)
        t0 = time.perf_counter()
        raw, prov = read_atlas(path, validate=False)
        t1 = time.perf_counter()
        df = validate_atlas(raw, prov, str(path))
        t2 = time.perf_counter()
    order = B.spatial_order(df["lon"].to_numpy(), df["lat"].to_numpy())
    t3 = time.perf_counter()
    dtypes = {"id": "int64", "run_id": "int32", **ATLAS_COLUMNS}
    fast = B._fixed_width_columns(df, dtypes)
    encoded_bytes = 0
    for start in range(0, args.n, B._COPY_CHUNK_ROWS):
        rows = order[start:start + B._COPY_CHUNK_ROWS]
        constants = {"run_id": np.int32(1), "id": np.arange(start, start + len(rows), dtype=np.int64)}
        encoded_bytes += len(B._binary_fixed_rows(fast, rows, len(rows), dtypes, constants) if fast is not None
                             else B._binary_rows(df.take(rows).assign(**constants), dtypes))
    t4 = time.perf_counter()
    res["client_s"] = {"read_parquet": t1 - t0, "validate": t2 - t1, "z_order": t3 - t2, "encode_all_rows": t4 - t3}
    res["encoded_mb"] = encoded_bytes / 2**20

    print(f"[profile] database {safe_url(args.db)} (dropped and re-created)")
    recreate_database(args.db)
    wal = psycopg2.connect(make_dsn(args.db))
    wal.autocommit = True
    statements: list[dict] = []

    def wal_bytes() -> int:
        with wal.cursor() as c:
            c.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            return int(c.fetchone()[0])

    class TimedCursor(psycopg2.extensions.cursor):
        def _timed(self, what, call):
            w0, s0 = wal_bytes(), time.perf_counter()
            out = call()
            statements.append({"statement": " ".join(str(what).split())[:100], "s": time.perf_counter() - s0,
                               "wal_mb": (wal_bytes() - w0) / 2**20})
            return out

        def execute(self, query, vars=None):
            return self._timed(query, lambda: super(TimedCursor, self).execute(query, vars))

        def copy_expert(self, sql, file, size=8192):
            return self._timed(sql, lambda: super(TimedCursor, self).copy_expert(sql, file, size))

    engine = get_engine(args.db, connect_args={"cursor_factory": TimedCursor})
    res["load_average"]["before_load"] = load_average()
    t0 = time.perf_counter()
    result = B.load_atlas_run(df, prov, engine=engine)
    res["load_s"] = time.perf_counter() - t0
    res["load_average"]["after_load"] = load_average()
    assert result.inserted == args.n
    engine.dispose()
    wal.close()
    drop_database(args.db)
    res["statements"] = [s for s in statements if s["s"] >= 0.05]
    res["statements_other_s"] = sum(s["s"] for s in statements if s["s"] < 0.05)
    print(f"[profile] {args.n} craters; client: " + ", ".join(f"{k} {v:.2f} s" for k, v in res["client_s"].items()))
    print(f"[profile] load_atlas_run {res['load_s']:.2f} s ({args.n / res['load_s']:,.0f} craters/s), statements:")
    for s in res["statements"]:
        print(f"  {s['s']:7.2f} s  WAL {s['wal_mb']:7.0f} MB  {s['statement']}")
    print(f"  load average: {res['load_average']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[profile] wrote {out}")
    return 0


def make_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = {"host": u.host, "port": u.port, "user": u.username, "password": u.password, "dbname": u.database}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


if __name__ == "__main__":
    sys.exit(main())
