"""How well each crater-verifier feature tells craters from other detections on LOLA, box by box.

    python benchmarks/lola_verifier_auc.py --work WORK --below 0.395 --out benchmarks/results/lola_verifier_auc.json

Reads what benchmarks/lola_verifier.py and eval_lola.py --verifier left in WORK (the atlases of the
training boxes, val and test and their cached ``etl.verifier`` features; --tag picks the atlases of
test-time views, e.g. _tta-hflip-vflip-rot90) and reports, for the detections inside each box scored
>= --min-detector-score and labelled as lola_verifier labels them (1 = a Head 2010 crater matches,
DeepMoon rule; 0 = none and >= 20 km): the area under the ROC curve of each feature (0.5 = no
information; < 0.5 = lower for craters), over all of them and over those the detector scores under
--below (its val threshold: the detections a verifier would have to lift); and the recall of every
detection >= --min-detector-score (the most any re-scoring of them can reach). A diagnostic of the
test box: nothing here chooses anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import eval_lola  # noqa: E402
from lola_verifier import labels_of  # noqa: E402


def roc_auc(labels: np.ndarray, values: np.ndarray) -> float:
    """Mann-Whitney area under the ROC curve (ties count half); NaN values and labels left out."""
    from scipy.stats import rankdata

    ok = np.isfinite(values) & np.isfinite(labels)
    y, v = labels[ok].astype(bool), values[ok]
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(v)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--catalogue", type=Path, default=eval_lola.HEAD2010_WEST_CSV)
    ap.add_argument("--tag", default="", help="atlas file tag, e.g. _tta-hflip-vflip-rot90")
    ap.add_argument("--below", type=float, required=True, help="the detector's val score threshold")
    ap.add_argument("--min-detector-score", type=float, default=0.1)
    ap.add_argument("--complete-above-km", type=float, default=20.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import pandas as pd

    from etl.catalogue import read_catalogue
    from etl.evaluation import Region, evaluate_atlas
    from etl.local_tiles import parse_boxes
    from etl.verifier import FEATURES

    reference = read_catalogue(args.catalogue)
    out = {"below": args.below, "min_detector_score": args.min_detector_score, "tag": args.tag, "boxes": {}}
    for name, boxes, stem in (("train", eval_lola.TRAIN, "atlas_train_in"), ("val", eval_lola.VAL, "atlas_val"),
                              ("test", eval_lola.TEST, "atlas_test")):
        found = sorted(args.work.glob(f"{stem}{args.tag}_verifier_features_*.parquet"))
        found = [p for p in found if "_sample" not in p.name]
        if not found:
            print(f"{name}: no cached features in {args.work} ({stem}{args.tag}_verifier_features_*)")
            continue
        atlas_path = args.work / f"{'atlas_train' if name == 'train' else stem}{args.tag}.parquet"
        atlas = pd.read_parquet(atlas_path)
        inside = np.zeros(len(atlas), bool)
        for box in parse_boxes(boxes):
            inside |= box.contains(atlas.lon.to_numpy(float), atlas.lat.to_numpy(float))
        if name == "train":  # lola_verifier measured the detections inside the training boxes only
            atlas = atlas[inside].reset_index(drop=True)
            inside = np.ones(len(atlas), bool)
        features = pd.read_parquet(found[0])
        if len(features) != len(atlas):
            raise SystemExit(f"{found[0].name}: {len(features)} rows for {len(atlas)} detections")
        score = atlas.score.to_numpy(float)
        y = labels_of(atlas, reference, args.complete_above_km)
        sel = inside & np.isfinite(y) & (score >= args.min_detector_score)
        low = sel & (score < args.below)
        res = {"detections": int(sel.sum()), "craters": int(y[sel].sum()),
               "under_threshold": {"detections": int(low.sum()), "craters": int(y[low].sum())},
               "auc": {f: roc_auc(y[sel], features[f].to_numpy(float)[sel]) for f in FEATURES},
               "auc_under_threshold": {f: roc_auc(y[low], features[f].to_numpy(float)[low]) for f in FEATURES}}
        if name != "train":
            b = parse_boxes(boxes)[0]
            r = evaluate_atlas(atlas, reference, region=Region(b.lon_min, b.lat_min, b.lon_max, b.lat_max),
                               min_diameter_km=args.complete_above_km, rules=("deepmoon",),
                               score_threshold=args.min_detector_score)["rules"]["deepmoon"]
            res["recall_of_all_candidates"] = r["recall"]
            res["num_reference"] = r["num_reference"]
        out["boxes"][name] = res
        print(f"{name}: {res['detections']} labelled detections >= {args.min_detector_score} ({res['craters']} craters), "
              f"{res['under_threshold']['detections']} under {args.below} ({res['under_threshold']['craters']} craters)"
              + (f"; recall of all of them {res['recall_of_all_candidates']:.3f}" if name != "train" else ""))
        for f in FEATURES:
            print(f"  {f:24s} AUC {res['auc'][f]:.3f}, under the threshold {res['auc_under_threshold'][f]:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
