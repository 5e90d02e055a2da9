#!/usr/bin/env python
"""The age network on the real Moon: Head 2010 craters of the western hemisphere with their
USGS 2013 age labels, crops from LOLA topography (3.8 km/px) and albedo, stratigraphy from
the USGS 2013 label points.

Train on part of the west, test on a spatially disjoint part (whole lon/lat blocks of
``--block-deg``; each trial its own blocks). Mean Teacher's unlabelled craters are the Head
2010 craters without a consistent single-system label and, with ``--atlas``, the craters of a
detector's atlas of the west that match no Head 2010 crater (``etl.matching``'s project rule):
craters under the catalogue's 20 km limit, and Head misses (or false detections). Atlas craters
join only training blocks (``age_net.engine.make_split``): no test- or val-block crater is
trained on, labelled or not; those in blocks without any Head crater are left out, so the blocks,
and hence every trial's split, are the same with and without the atlas. Run twice: crater-material
units off (the honest result: near a crater they *are* its label) and on (to show the leak);
``--materials off`` runs only the first.
``--context`` adds relative-age evidence that no crater's own label or map units give
(:mod:`etl.superposition`: superposed catalogue craters and crater densities, the ejecta of dated
basins, wide-field albedo rays), computed on the whole Head 2010 table (every crater, labelled or not).
Reports accuracy, macro-F1 and ECE (mean and std over trials; val accuracy and macro-F1 too, for
choosing settings), per-class recall (mean over trials), the confusion matrix summed over trials
and accuracy by diameter bin; writes JSON.

Inputs (skipped with a message when absent): ``--lola DIR`` as written by
``deepcraters lunar-rasters ... --ages ... --catalogue ...`` (dem.tif, dom.tif,
ages_west.parquet) and ``--label-points`` (../shared/data/geology/usgs2013_unit_label_points.csv).

    python benchmarks/eval_age_real_moon.py --lola ../lola
    python benchmarks/eval_age_real_moon.py --lola ../lola --atlas west_atlas.gpkg --out ...   # + atlas craters
    python benchmarks/eval_age_real_moon.py --lola ../lola --materials off --context all --out ...
"""
from __future__ import annotations

import argparse
import hashlib
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
    p.add_argument("--atlas", type=Path, default=None,
                   help="a detector's atlas of the west (.gpkg/.parquet/.csv, `deepcraters atlas`): its craters "
                        "that match no Head 2010 crater join Mean Teacher's unlabelled craters")
    p.add_argument("--atlas-min-score", type=float, default=None,
                   help="use only atlas craters scoring at least this (default: all the atlas holds)")
    p.add_argument("--materials", choices=("both", "off", "on"), default="both",
                   help="crater-material units: off (the honest figure), on (the leak), or both runs")
    p.add_argument("--context", default="none",
                   help="relative-age evidence added to the stratigraphy (etl.superposition), comma-separated: "
                        "superposition (catalogue craters on the floor, ejecta and rim; crater densities), basins "
                        "(distance to dated basins, on their ejecta), rays (wide-field albedo), all, or none")
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


def context_parts(spec: str) -> set[str]:
    """``--context`` -> the parts of ``ATTRIBUTES.CONTEXT`` (:func:`age_net.config.context_parts`) to use."""
    from age_net.config import context_parts as parse

    try:
        return set(parse(str(spec)))
    except ValueError as exc:
        raise SystemExit(f"--context: {exc}") from None


def atlas_unlabelled(atlas_path: Path, table, *, block_deg: float, min_score: float | None = None):
    """The atlas's craters to add as unlabelled: in the west, matching no crater of ``table`` (every
    Head 2010 crater, labelled or not; the project's rule), in a lon/lat block that holds a Head crater
    (so the blocks of the spatial split do not change). Returns (craters, counts)."""
    import numpy as np
    import pandas as pd

    from etl.matching import has_match

    if atlas_path.suffix.lower() == ".gpkg":
        from etl.contracts import read_atlas

        atlas = read_atlas(atlas_path)[0]
    elif atlas_path.suffix.lower() == ".parquet":
        atlas = pd.read_parquet(atlas_path)
    else:
        atlas = pd.read_csv(atlas_path)
    counts = {"atlas": int(len(atlas))}
    if min_score is not None:
        atlas = atlas[atlas["score"] >= min_score]
    atlas = atlas[atlas["lon"] < 0].reset_index(drop=True)
    counts["west_above_score"] = int(len(atlas))
    known = has_match(atlas["lon"], atlas["lat"], atlas["diameter_km"], table["lon"], table["lat"],
                      table["diameter_km"])
    counts["matching_head2010"] = int(known.sum())
    atlas = atlas[~known]

    def block_keys(lon, lat):
        return zip(np.floor(np.asarray(lon, float) / block_deg).astype(int).tolist(),
                   np.floor(np.asarray(lat, float) / block_deg).astype(int).tolist())

    head_blocks = set(block_keys(table["lon"], table["lat"]))
    in_block = np.array([k in head_blocks for k in block_keys(atlas["lon"], atlas["lat"])], dtype=bool)
    counts["outside_head2010_blocks"] = int((~in_block).sum())
    atlas = atlas[in_block].reset_index(drop=True)
    counts["added"] = int(len(atlas))
    counts["added_below_20_km"] = int((atlas["diameter_km"] < 20.0).sum())
    return atlas[["lon", "lat", "diameter_km"]], counts


def main(argv=None) -> int:
    args = parse_args(argv)
    context = context_parts(args.context)
    needed = [args.lola / "dem.tif", args.lola / "dom.tif", args.lola / "ages_west.parquet", args.label_points]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print("skipped: real-Moon data not found: " + ", ".join(missing) + "\n(make it with 'deepcraters "
              "lunar-rasters --wheel ... --out DIR --ages ... --catalogue ...', see README)")
        return 0
    import numpy as np
    import pandas as pd

    from age_net.config import get_age_cfg
    from age_net.engine import _mean_std, crater_set_from_sources, run_trials
    from etl.geology import UnitLabelPoints

    table = pd.read_parquet(args.lola / "ages_west.parquet")
    table = table[table["lon"] < 0].reset_index(drop=True)  # the labels are western-hemisphere only
    catalogue = args.work / "head2010_west_ages.csv"
    args.work.mkdir(parents=True, exist_ok=True)
    table[["lon", "lat", "diameter_km", "age_class"]].to_csv(catalogue, index=False)
    units = UnitLabelPoints.from_csv(args.label_points)
    # The evidence goes through the product's path (ATTRIBUTES.CONTEXT, age_net.data.context_source):
    # superposition on every crater of the set, rays on the LOLA albedo (the DOM), as a trained model
    # measures it again at prediction.
    context_opts = ["ATTRIBUTES.CONTEXT", ",".join(sorted(context)) or "none"]
    results = {"what": "age net on the real Moon: Head 2010 west craters (USGS 2013 labels, consistent), LOLA "
                       "DEM + albedo crops, spatially disjoint test blocks", "block_deg": args.block_deg,
               "labelled": int((table["age_class"].fillna("") != "").sum()), "craters": len(table),
               "context": sorted(context)}
    unlabelled, suffix = None, ""
    if args.atlas is not None:
        extra, counts = atlas_unlabelled(args.atlas, table, block_deg=args.block_deg, min_score=args.atlas_min_score)
        text = extra.to_csv(index=False)
        # Named by content: the crop cache is keyed by this path.
        unlabelled = args.work / f"atlas_unlabelled_{hashlib.sha256(text.encode()).hexdigest()[:12]}.csv"
        unlabelled.write_text(text)
        suffix = "_atlas"
        results["atlas"] = {"file": args.atlas.name, "min_score": args.atlas_min_score} | counts
        print(f"atlas {args.atlas.name}: {counts['added']} craters added as unlabelled ({counts['added_below_20_km']} "
              f"under 20 km; {counts['matching_head2010']} matched a Head 2010 crater)")
    for crater_materials in {"both": (False, True), "off": (False,), "on": (True,)}[args.materials]:
        name = "crater_materials_" + ("on" if crater_materials else "off")
        opts = ["DATA.BLOCK_DEG", str(args.block_deg), "ATTRIBUTES.CRATER_MATERIAL_UNITS", str(crater_materials),
                # Real craters of 20-300 km are kilometres deep: a 2 km scale keeps the DEM channel near unit range.
                "INPUT.DEM_SCALE_M", "2000.0", "OUTPUT_DIR", str(args.work / (name + suffix))] + context_opts \
            + list(args.opts)
        cfg = get_age_cfg(args.config_file, opts)
        t0 = time.perf_counter()
        cs = crater_set_from_sources(cfg, catalogue=catalogue, dom=args.lola / "dom.tif", dem=args.lola / "dem.tif",
                                     units=units, unlabelled=unlabelled, cache_dir=args.work,
                                     progress=not args.quiet)
        summary = run_trials(cfg, cs, progress=not args.quiet)
        bins = [accuracy_by_diameter(Path(cfg.OUTPUT_DIR) / f"trial{t['trial']}" / "test_predictions.csv")
                for t in summary["trials"]]
        by_bin = {k: {"n": int(sum(b[k]["n"] for b in bins)),
                      "accuracy_mean": float(np.nanmean([b[k]["accuracy"] for b in bins]))} for k in bins[0]}
        codes = list(summary["trials"][0]["test"]["recall"])
        recall = {c: float(np.nanmean([t["test"]["recall"][c] for t in summary["trials"]])) for c in codes}
        confusion = np.sum([t["test"]["confusion"] for t in summary["trials"]], axis=0).tolist()
        results[name] = {
            "model": summary["model"], "attributes": int(cs.attributes.shape[1]),
            "schema": cs.schema.version, "test": summary["test"], "accuracy_by_diameter": by_bin,
            "recall_mean": recall, "confusion_summed": confusion,
            "val": {k: _mean_std([t["val"][k] for t in summary["trials"]]) for k in ("accuracy", "macro_f1")},
            "per_trial": [{k: t[k] for k in ("seed", "n_train", "n_unlabelled", "temperature")}
                          | {"n_test": t["test"]["n"], "recall": t["test"]["recall"]} for t in summary["trials"]],
            "seconds": time.perf_counter() - t0,
        }
        s = summary["test"]
        print(f"{name}: accuracy {s['accuracy']['mean']:.3f} +- {s['accuracy']['std']:.3f}, macro-F1 "
              f"{s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f} over {len(summary['trials'])} trial(s); "
              + ", ".join(f"{k}: {v['accuracy_mean']:.2f} (n={v['n']})" for k, v in by_bin.items())
              + "; recall " + ", ".join(f"{c} {r:.2f}" for c, r in recall.items()))
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
