"""The client's share of an atlas load and of a search answer, each side by side with the
method it replaced, on the same data, interleaved (so a shared machine loads both alike):

- validating an atlas frame (``etl.contracts.validate_atlas``) with the duplicate-id check by
  sorted 64-bit hashes of the ids' bytes (``_duplicated``, now) and with pandas' exact
  hash-table check alone (before);
- turning a search answer in PostgreSQL's binary COPY format into a DataFrame
  (``atlas_db.queries._parse_search_rows``) with ids and run names made into an Arrow string
  array over their bytes (now) and decoded through numpy ``U`` strings (before), for answers
  as large as a 50 km cap's at 1.3 million and at 10 million craters.

CPU seconds of this process (``time.process_time``) and wall seconds, medians of the
repetitions; writes JSON. No database.

    python benchmarks/bench_atlas_client.py --n 3000000 --out benchmarks/results/atlas_client_3m.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import etl.contracts as C  # noqa: E402
from atlas_db import queries as Q  # noqa: E402
from atlas_db.synthetic import atlas_provenance, synthetic_atlas  # noqa: E402


def _exact_duplicated(ids: pd.Series) -> np.ndarray:
    """The check before: pandas' hash table over every id."""
    return ids.duplicated(keep="first").to_numpy(dtype=bool)


def _parse_before(raw, texts, floats) -> pd.DataFrame:
    """``_parse_search_rows`` as it was for answers whose texts have one width per column:
    each text column decoded through numpy ``U`` strings (a Python-level string per value
    inside pandas' conversion)."""
    body = np.frombuffer(raw, dtype=np.uint8)[Q._COPY_HEADER_BYTES:-2]
    lengths, at = [], 2
    for _ in texts:
        n = int.from_bytes(body[at:at + 4], "big", signed=True)
        lengths.append(n)
        at += 4 + n
    fields = [("nfields", ">i2")]
    for name, n in zip(texts, lengths):
        fields += [(f"{name}__len", ">i4"), (name, f"S{n}")]
    fields += [f for name in floats for f in ((f"{name}__len", ">i4"), (name, ">f8"))]
    rec = body.view(np.dtype(fields))
    out = {}
    for name in texts:
        col = rec[name]
        try:
            out[name] = pd.array(col.astype(str), dtype="str")
        except UnicodeDecodeError:
            out[name] = pd.array(np.char.decode(col, "utf-8"), dtype="str")
    for name in floats:
        out[name] = rec[name].astype(np.float64)
    return pd.DataFrame(out)


def answer_bytes(atlas: pd.DataFrame, rows: int, run_name: str) -> bytes:
    """A radius-search answer of ``rows`` craters as PostgreSQL's binary COPY sends it
    (run_name, crater_id, lon, lat, diameter_km, score, distance_km)."""
    part = atlas.iloc[:rows]
    texts = {"run_name": np.full(rows, run_name.encode()), "crater_id": part["crater_id"].to_numpy().astype("S")}
    floats = {c: part[c].to_numpy(dtype=float) for c in ("lon", "lat", "diameter_km", "score")}
    floats["distance_km"] = np.linspace(0.0, 50.0, rows)
    fields = [("nfields", ">i2")]
    for name, v in texts.items():
        fields += [(f"{name}__len", ">i4"), (name, v.dtype.str.replace("|", ""))]
    fields += [f for name in floats for f in ((f"{name}__len", ">i4"), (name, ">f8"))]
    rec = np.empty(rows, dtype=np.dtype(fields))
    rec["nfields"] = len(texts) + len(floats)
    for name, v in texts.items():
        rec[f"{name}__len"], rec[name] = v.dtype.itemsize, v
    for name, v in floats.items():
        rec[f"{name}__len"], rec[name] = 8, v
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rec.tobytes() + b"\xff\xff"


def side_by_side(fns: dict, reps: int) -> dict:
    """Run each of ``fns`` ``reps`` times, alternating which goes first; median CPU and wall s."""
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        for k in (names if r % 2 == 0 else names[::-1]):
            c0, w0 = time.process_time(), time.perf_counter()
            fns[k]()
            times[k].append((time.process_time() - c0, time.perf_counter() - w0))
    return {k: {"cpu_s": float(np.median([c for c, _ in v])), "wall_s": float(np.median([w for _, w in v])),
                "runs": len(v)} for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3_000_000, help="craters in the validated frame")
    ap.add_argument("--reps", type=int, default=4, help="validations of each kind")
    ap.add_argument("--out", default="benchmarks/results/atlas_client.json")
    args = ap.parse_args(argv)
    res: dict = {"n": args.n, "cpus": os.cpu_count(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    run = "bench-client"
    atlas = synthetic_atlas(args.n, run, 2018)
    prov = atlas_provenance(run)
    now = C._duplicated
    raw = atlas.assign(crater_id=atlas["crater_id"].astype("str"))  # as a Parquet file reads back

    def validate_with(dup):
        def go():
            C._duplicated = dup
            try:
                return C.validate_atlas(raw, prov)
            finally:
                C._duplicated = now
        return go

    pd.testing.assert_frame_equal(validate_with(now)(), validate_with(_exact_duplicated)())  # the same frame
    res["validate_atlas"] = side_by_side({"before_exact_check": validate_with(_exact_duplicated),
                                          "now_hashed_check": validate_with(now)}, args.reps)
    v = res["validate_atlas"]
    v["cpu_ratio_now_before"] = v["now_hashed_check"]["cpu_s"] / v["before_exact_check"]["cpu_s"]
    print(f"[client] validate_atlas, {args.n} craters: before {v['before_exact_check']['cpu_s']:.2f} s CPU, "
          f"now {v['now_hashed_check']['cpu_s']:.2f} s CPU ({v['cpu_ratio_now_before']:.2f}x)")

    floats = Q._SEARCH_FLOAT + ("distance_km",)
    res["search_answer_parse"] = {}
    for rows in (269, 2071):  # a 50 km cap at 1.3 M and at 10 M craters
        data = answer_bytes(atlas, rows, run)
        before = _parse_before(data, Q._SEARCH_TEXT, floats)
        pd.testing.assert_frame_equal(Q._parse_search_rows(data, Q._SEARCH_TEXT, floats), before)
        loops = 200

        def many(fn):
            return lambda: [fn(data, Q._SEARCH_TEXT, floats) for _ in range(loops)]

        got = side_by_side({"before_numpy_strings": many(_parse_before),
                            "now_arrow_strings": many(Q._parse_search_rows)}, 6)
        out = {k: {"ms_per_answer_cpu": v["cpu_s"] / loops * 1e3, "ms_per_answer_wall": v["wall_s"] / loops * 1e3}
               for k, v in got.items()}
        out["cpu_ratio_now_before"] = (out["now_arrow_strings"]["ms_per_answer_cpu"]
                                       / out["before_numpy_strings"]["ms_per_answer_cpu"])
        res["search_answer_parse"][f"{rows}_rows"] = out
        print(f"[client] parse a {rows}-crater answer: "
              f"before {out['before_numpy_strings']['ms_per_answer_cpu']:.3f} ms, "
              f"now {out['now_arrow_strings']['ms_per_answer_cpu']:.3f} ms ({out['cpu_ratio_now_before']:.2f}x)")
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[client] wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
