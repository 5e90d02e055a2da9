#!/usr/bin/env python
"""The age network on the real Moon: Head 2010 craters of the western hemisphere with their
USGS 2013 age labels, crops from LOLA topography (3.8 km/px) and albedo, stratigraphy from
the USGS 2013 label points.

Train on part of the west, test on a spatially disjoint part (whole lon/lat blocks of
``--block-deg``; each trial its own blocks). Mean Teacher's unlabelled craters are the Head
2010 craters without a consistent single-system label. Run twice: crater-material units
off (the honest result: near a crater they *are* its label) and on (to show the leak).
Reports accuracy, macro-F1 and ECE (mean and std over trials) and accuracy by diameter bin;
writes JSON.

Inputs (skipped with a message when absent): ``--lola DIR`` as written by
``deepcraters lunar-rasters ... --ages ... --catalogue ...`` (dem.tif, dom.tif,
ages_west.parquet) and ``--label-points`` (../shared/data/geology/usgs2013_unit_label_points.csv).

    python benchmarks/eval_age_real_moon.py --lola ../lola
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
DIAMETER_BINS_KM = (20.0, 30.0, 50.0, 100.0, float("inf"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lola", type=Path, default=REPO.parent / "lola",
                   help="dir with dem.tif, dom.tif, ages_west.parquet")
    p.add_argument("--label-points", type=Path,
                   default=REPO.parent / "shared" / "data" / "geology" / "usgs2013_unit_label_points.csv")
    p.add_argument("--config-file", default=str(REPO / "configs" / "age_net" / "agenet_mt_R18_S32_cpu.yaml"))
    p.add_argument("--work", type=Path, default=REPO / "output" / "age_real_moon", help="checkpoints, metrics")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "age_real_moon.json")
    p.add_argument("--block-deg", type=float, default=15.0, help="side of the spatial split's blocks, degrees")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("opts", nargs="...", help="config overrides, KEY VALUE pairs (e.g. TRIALS 3 SOLVER.MAX_ITER 600)")
    return p.parse_args(argv)


def accuracy_by_diameter(pred_csv: Path) -> dict:
    import pandas as pd

    df = pd.read_csv(pred_csv)
    out = {}
    for lo, hi in zip(DIAMETER_BINS_KM[:-1], DIAMETER_BINS_KM[1:]):
        sel = (df["diameter_km"] >= lo) & (df["diameter_km"] < hi)
        key = f"{lo:g}-{hi:g} km" if hi != float("inf") else f">= {lo:g} km"
        out[key] = {"n": int(sel.sum()),
                    "accuracy": float((df.loc[sel, "true_class"] == df.loc[sel, "predicted_class"]).mean())
                    if sel.any() else float("nan")}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    needed = [args.lola / "dem.tif", args.lola / "dom.tif", args.lola / "ages_west.parquet", args.label_points]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print("skipped: real-Moon data not found: " + ", ".join(missing) + "\n(make it with 'deepcraters "
              "lunar-rasters --wheel ... --out DIR --ages ... --catalogue ...', see README)")
        return 0
    import numpy as np
    import pandas as pd

    from age_net.config import get_age_cfg
    from age_net.engine import crater_set_from_sources, run_trials
    from etl.geology import UnitLabelPoints

    table = pd.read_parquet(args.lola / "ages_west.parquet")
    table = table[table["lon"] < 0].reset_index(drop=True)  # the labels are western-hemisphere only
    catalogue = args.work / "head2010_west_ages.csv"
    args.work.mkdir(parents=True, exist_ok=True)
    table[["lon", "lat", "diameter_km", "age_class"]].to_csv(catalogue, index=False)
    units = UnitLabelPoints.from_csv(args.label_points)
    results = {"what": "age net on the real Moon: Head 2010 west craters (USGS 2013 labels, consistent), LOLA "
                       "DEM + albedo crops, spatially disjoint test blocks", "block_deg": args.block_deg,
               "labelled": int((table["age_class"].fillna("") != "").sum()), "craters": len(table)}
    for crater_materials in (False, True):
        name = "crater_materials_" + ("on" if crater_materials else "off")
        opts = ["DATA.BLOCK_DEG", str(args.block_deg), "ATTRIBUTES.CRATER_MATERIAL_UNITS", str(crater_materials),
                # Real craters of 20-300 km are kilometres deep: a 2 km scale keeps the DEM channel near unit range.
                "INPUT.DEM_SCALE_M", "2000.0", "OUTPUT_DIR", str(args.work / name)] + list(args.opts)
        cfg = get_age_cfg(args.config_file, opts)
        t0 = time.perf_counter()
        cs = crater_set_from_sources(cfg, catalogue=catalogue, dom=args.lola / "dom.tif", dem=args.lola / "dem.tif",
                                     units=units, cache_dir=args.work, progress=not args.quiet)
        summary = run_trials(cfg, cs, progress=not args.quiet)
        bins = [accuracy_by_diameter(Path(cfg.OUTPUT_DIR) / f"trial{t['trial']}" / "test_predictions.csv")
                for t in summary["trials"]]
        by_bin = {k: {"n": int(sum(b[k]["n"] for b in bins)),
                      "accuracy_mean": float(np.nanmean([b[k]["accuracy"] for b in bins]))} for k in bins[0]}
        results[name] = {
            "model": summary["model"], "attributes": int(cs.attributes.shape[1]),
            "schema": cs.schema.version, "test": summary["test"], "accuracy_by_diameter": by_bin,
            "per_trial": [{k: t[k] for k in ("seed", "n_train", "n_unlabelled", "temperature")}
                          | {"n_test": t["test"]["n"], "recall": t["test"]["recall"]} for t in summary["trials"]],
            "seconds": time.perf_counter() - t0,
        }
        s = summary["test"]
        print(f"{name}: accuracy {s['accuracy']['mean']:.3f} +- {s['accuracy']['std']:.3f}, macro-F1 "
              f"{s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f} over {len(summary['trials'])} trial(s); "
              + ", ".join(f"{k}: {v['accuracy_mean']:.2f} (n={v['n']})" for k, v in by_bin.items()))
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
