"""One atlas file loaded by two versions of the code, alternately: the working tree ("new") and
the ``atlas_db`` and ``etl`` packages of a git revision ("old", extracted with ``git archive``).
Each load is ``etl.load.load_atlas`` as ``deepcraters load atlas`` runs it (read the file,
validate it, copy, build keys and indexes, commit, ANALYZE) into a fresh database migrated
by that version's own migrations, with each statement of 0.3 s or more timed. The order
alternates (old, new, new, old, ...) so that a shared machine loads both alike; compare the
ratios. Writes JSON.

    python benchmarks/compare_atlas_load.py --old 453c669 --n 3000000 --reps 2 \\
      --out benchmarks/results/atlas_load_side_by_side_3m.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@localhost:5432/deepcraters_compare_bench"


def child(path: str, url: str) -> dict:
    """One load by the code on PYTHONPATH (imported before this repository's path is added)."""
    import psycopg2.extensions

    import atlas_db.migrate  # noqa: F401  (the version under test, from PYTHONPATH)
    import etl.load as L
    from atlas_db.engine import get_engine

    sys.path.insert(1, str(REPO / "benchmarks"))
    from bench_atlas_db import drop_database, recreate_database

    statements: list = []

    class Timed(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            t0 = time.perf_counter()
            out = super().execute(query, vars)
            statements.append((" ".join(str(query).split())[:70], time.perf_counter() - t0))
            return out

        def copy_expert(self, query, file, size=8192):
            t0 = time.perf_counter()
            out = super().copy_expert(query, file, size)
            statements.append(("COPY", time.perf_counter() - t0))
            return out

    recreate_database(url)
    engine = get_engine(url, connect_args={"cursor_factory": Timed})
    c0, t0 = time.process_time(), time.perf_counter()
    result = L.load_atlas(path, engine=engine)
    load_s = time.perf_counter() - t0
    engine.dispose()
    drop_database(url)
    return {"code": atlas_db.migrate.__file__, "rows": result.inserted, "load_s": load_s,
            "rows_per_s": result.inserted / load_s, "client_cpu_s": time.process_time() - c0,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "statements": [{"statement": s, "s": round(t, 2)} for s, t in statements if t >= 0.3]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="git revision of the code to compare with (required)")
    ap.add_argument("--n", type=int, default=3_000_000, help="craters in the synthetic atlas file")
    ap.add_argument("--reps", type=int, default=2, help="loads of each version")
    ap.add_argument("--db", default=DEFAULT_URL, help="scratch database (dropped and re-created)")
    ap.add_argument("--out", default="benchmarks/results/atlas_load_side_by_side.json")
    ap.add_argument("--child", nargs=2, metavar=("FILE", "URL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if not args.old:
        ap.error("--old REVISION is required")
    if "bench" not in args.db.rsplit("/", 1)[-1]:
        ap.error("the comparison drops its database: use one whose name contains 'bench'")
    sys.path.insert(0, str(REPO))
    from atlas_db.synthetic import atlas_provenance, synthetic_atlas
    from etl.contracts import write_atlas

    rev = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    res: dict = {"n": args.n, "old": rev, "new": "working tree", "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="compare_load_") as tmp:
        old_tree = Path(tmp) / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "archive", rev, "atlas_db", "etl"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        path = Path(tmp) / "atlas.parquet"
        write_atlas(synthetic_atlas(args.n, "compare-run", 2018), path, atlas_provenance("compare-run"))
        for i in range(2 * args.reps):
            which = ("old", "new", "new", "old")[i % 4]
            env = {**os.environ, "PYTHONPATH": str(old_tree if which == "old" else REPO)}
            out = subprocess.run([sys.executable, __file__, "--child", str(path), args.db], env=env, check=True,
                                 stdout=subprocess.PIPE, text=True, cwd=tmp).stdout
            run = {"version": which, **json.loads(out.strip().splitlines()[-1])}
            res["runs"].append(run)
            print(f"[compare] {which}: {run['rows_per_s']:,.0f} craters/s ({run['load_s']:.2f} s), load average "
                  f"{run['load_average'][0]}; " + ", ".join(f"{s['statement'][:40]} {s['s']:.2f} s"
                                                          for s in run["statements"]))
    for which in ("old", "new"):
        secs = sorted(r["load_s"] for r in res["runs"] if r["version"] == which)
        res[f"{which}_load_s"] = secs
    res["time_ratio_new_old"] = sum(res["new_load_s"]) / sum(res["old_load_s"])
    print(f"[compare] load time new / old: {res['time_ratio_new_old']:.3f}")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[compare] wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
