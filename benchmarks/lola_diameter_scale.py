"""Does a diameter scale calibrated on one region carry to another? The LOLA atlas's evidence.

    python benchmarks/lola_diameter_scale.py --atlas WORK/atlas_one.parquet --threshold T \
        --calibration WORK/run/calibration.json --out benchmarks/results/lola_diameter_scale.json

``--atlas`` is an atlas of the west made WITHOUT a diameter scale (``eval_lola.py ... --diameter-scale 1
--one-atlas=-180,-90,4,90``); ``--threshold`` the val-calibrated score threshold it is scored at;
``--calibration`` the training run's ``calibration.json`` (the val tiles' median true / detected
diameter, before any merge: the scale training records).

The ratio that a scale would correct, median true / detected diameter of the craters >= 20 km
matched one-to-one (``etl.matching``'s project rule, the rule of the tile evaluator that
calibrates the scale), is measured on the merged atlas in the val box, the test box, the
training boxes, and in 30 x 30 degree blocks of the west (|lat| <= 60), each with a bootstrap
90 % interval (resampling the matched craters). If the blocks' ratios differ by more than their
intervals, the size bias is a property of the terrain, and a scale measured in one region (val)
moves another (test) by the wrong amount. The test box is then scored (DeepMoon rule, median
absolute diameter error and bias) with each candidate scale: none, the tiles' (training's), and
the val atlas's, and the training boxes' atlas's (the model's own training region, for scale).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_lola import HEAD2010_WEST_CSV, LABELLED, TEST, TRAIN, VAL  # noqa: E402  the same boxes as the detector benchmark


def matched_ratios(atlas, reference, region, min_diameter_km: float, rule_name: str = "project") -> np.ndarray:
    """True / detected diameter of each reference crater >= ``min_diameter_km`` in ``region``
    matched one-to-one by ``rule_name`` (detections by decreasing score)."""
    from etl.matching import RULES, match_one_to_one

    ref_in = region.contains(reference.lon, reference.lat) & (reference.diameter_km.to_numpy(float) >= min_diameter_km)
    ref = reference[ref_in].reset_index(drop=True)
    match = match_one_to_one(atlas.lon, atlas.lat, atlas.diameter_km, atlas.score, ref.lon, ref.lat,
                             ref.diameter_km, RULES[rule_name])
    hit = match >= 0
    return ref.diameter_km.to_numpy(float)[match[hit]] / atlas.diameter_km.to_numpy(float)[hit]


def median_with_interval(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> dict:
    """Median and its bootstrap 90 % interval."""
    if len(values) == 0:
        return {"n": 0, "median": float("nan"), "lo90": float("nan"), "hi90": float("nan")}
    boots = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    return {"n": int(len(values)), "median": float(np.median(values)),
            "lo90": float(np.quantile(boots, 0.05)), "hi90": float(np.quantile(boots, 0.95))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", type=Path, required=True, help="atlas parquet of the west, made without a scale")
    ap.add_argument("--threshold", type=float, required=True, help="the val-calibrated score threshold")
    ap.add_argument("--calibration", type=Path, default=None, help="the training run's calibration.json")
    ap.add_argument("--catalogue", type=Path, default=HEAD2010_WEST_CSV)
    ap.add_argument("--min-diameter-km", type=float, default=20.0)
    ap.add_argument("--block-deg", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lola_diameter_scale.json")
    args = ap.parse_args(argv)

    import pandas as pd

    from etl.catalogue import read_catalogue
    from etl.evaluation import Region, evaluate_atlas
    from etl.local_tiles import parse_boxes

    rng = np.random.default_rng(0)
    reference = read_catalogue(args.catalogue)
    atlas = pd.read_parquet(args.atlas)
    atlas = atlas[atlas.score.to_numpy(float) >= args.threshold].reset_index(drop=True)

    def region_of(box):
        return Region(box.lon_min, box.lat_min, box.lon_max, box.lat_max)

    def ratios_in(boxes_text):
        return np.concatenate([matched_ratios(atlas, reference, region_of(b), args.min_diameter_km)
                               for b in parse_boxes(boxes_text)])

    regions = {name: median_with_interval(ratios_in(text), rng)
               for name, text in (("val", VAL), ("test", TEST), ("train", TRAIN))}
    blocks = []
    step = args.block_deg
    for lon0 in np.arange(-180.0, 0.0, step):
        for lat0 in np.arange(-60.0, 60.0, step):
            r = matched_ratios(atlas, reference, Region(lon0, lat0, lon0 + step, lat0 + step), args.min_diameter_km)
            if len(r) >= 10:
                blocks.append({"lon_min": float(lon0), "lat_min": float(lat0), **median_with_interval(r, rng)})
    medians = np.array([b["median"] for b in blocks])
    half_widths = np.array([(b["hi90"] - b["lo90"]) / 2 for b in blocks])
    # Blocks whose interval excludes the pooled median of the whole west.
    pooled = float(np.median(ratios_in(LABELLED)))
    outside = int(sum(b["lo90"] > pooled or b["hi90"] < pooled for b in blocks))

    tiles_scale = None
    if args.calibration and args.calibration.is_file():
        tiles_scale = float(json.loads(args.calibration.read_text())["metrics"]["diameter_ratio_at_best_f1"])
    candidates = {"none": 1.0, "val_atlas": regions["val"]["median"], "train_atlas": regions["train"]["median"]}
    if tiles_scale is not None:
        candidates["val_tiles"] = tiles_scale
    t = parse_boxes(TEST)[0]
    scored = {}
    for name, scale in candidates.items():
        res = evaluate_atlas(atlas.assign(diameter_km=atlas.diameter_km * scale), reference, region=region_of(t),
                             min_diameter_km=args.min_diameter_km, rules=("deepmoon", "project"))
        scored[name] = {"scale": scale, **{rule: {k: res["rules"][rule][k] for k in
                                                  ("recall", "precision", "median_abs_diameter_error_frac",
                                                   "median_diameter_bias_frac")} for rule in ("deepmoon", "project")}}
    result = {"atlas": args.atlas.name, "score_threshold": args.threshold, "rule": "project",
              "min_diameter_km": args.min_diameter_km, "regions": regions, "pooled_west_median": pooled,
              "blocks": blocks, "block_median_spread_std": float(np.std(medians)) if len(medians) else float("nan"),
              "block_interval_half_width_median": float(np.median(half_widths)) if len(half_widths) else float("nan"),
              "blocks_excluding_pooled": outside, "num_blocks": len(blocks),
              "test_with_scale": scored}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in regions.items():
        print(f"{name:6s} true/detected {r['median']:.3f} [{r['lo90']:.3f}, {r['hi90']:.3f}] (n {r['n']})")
    print(f"{len(blocks)} blocks of {step:g} deg: medians {medians.min():.3f}..{medians.max():.3f}, "
          f"std {result['block_median_spread_std']:.3f}; median 90 % half-width "
          f"{result['block_interval_half_width_median']:.3f}; {outside} exclude the west's {pooled:.3f}")
    for name, s in scored.items():
        d = s["deepmoon"]
        print(f"test with scale {name} ({s['scale']:.3f}): DeepMoon median |dD|/D "
              f"{d['median_abs_diameter_error_frac']:.3f} (bias {d['median_diameter_bias_frac']:+.3f})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
