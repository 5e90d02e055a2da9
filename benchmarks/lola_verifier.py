"""Fit the crater verifier (``etl.verifier``) of a LOLA detector: on the training region's detections,
its L2 strength chosen on the val box; saved beside the detector's weights.

    python benchmarks/lola_verifier.py --lola LOLA_DIR --work WORK --config CONFIG --weights MODEL \\
        --out benchmarks/results/lola_verifier.json      # writes MODEL's folder/verifier.json
    python benchmarks/eval_lola.py --lola LOLA_DIR --work WORK --config CONFIG --weights MODEL \\
        --verifier MODEL_DIR/verifier.json --out ...     # test, scored once with it

1. atlases (``eval_lola.atlas``, the same settings and files as eval_lola's) of the training boxes
   (eval_lola.TRAIN, no margin) and of the val box;
2. verifier features of every detection scored >= --min-detector-score (``etl.verifier``);
3. labels on the training boxes: 1 = a Head (2010) crater matches the detection (DeepMoon rule, any
   catalogued crater), 0 = none does and the detection is >= the completeness limit (20 km);
   unmatched detections under the limit are unlabelled (Head lists no craters < 20 km);
4. one logistic regression per --l2 value (with --stack-on-val: the DEM features fitted on the
   training boxes without the detector's score, which is too confident there, and the two logits
   weighed on the val box's detections: ``CraterVerifier.fit_stacked``); the one with the highest val recall at precision >= 0.85
   (DeepMoon rule, the "detected" boundary: eval_lola's scoring) is kept (ties: val best F1), with
   its val best-F1 score threshold. Test is not read.
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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    eval_lola.add_data_args(ap)
    ap.add_argument("--work", type=Path, required=True, help="eval_lola's work folder (tiles, atlases)")
    ap.add_argument("--config", type=Path, default=eval_lola.CONFIG)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--tta", default="none", help="as eval_lola's --tta (default: none)")
    ap.add_argument("--min-detector-score", type=float, default=0.1,
                    help="candidates the detector scores lower are not measured (verifier score 0)")
    ap.add_argument("--max-train-detections", type=int, default=0,
                    help="fit on a random sample of at most this many of the training boxes' measured detections "
                         "(seed 0; 0: all); each costs ~0.1-0.2 s of DEM measurement")
    ap.add_argument("--stack-on-val", action="store_true",
                    help="fit the DEM features on the training boxes without the detector's score (it is too "
                         "confident on the craters it was trained on), then weigh the detector's logit and theirs "
                         "on the val box's detections (CraterVerifier.fit_stacked); the threshold and L2 are still "
                         "chosen on val, so val is no longer an unseen region for the verifier")
    ap.add_argument("--l2", default="0.001,0.01,0.1", help="comma-separated L2 strengths to choose from on val")
    ap.add_argument("--model-out", type=Path, default=None, help="default: verifier.json beside --weights")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lola_verifier.json")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def labels_of(frame, reference, limit_km: float) -> np.ndarray:
    """1 = some catalogued crater matches (DeepMoon rule), 0 = none and >= the limit, NaN = unlabelled."""
    from etl.matching import DEEPMOON_RULE, has_match

    hit = has_match(frame.lon, frame.lat, frame.diameter_km, reference.lon, reference.lat, reference.diameter_km,
                    DEEPMOON_RULE)
    return np.where(hit, 1.0, np.where(frame.diameter_km.to_numpy(float) >= limit_km, 0.0, np.nan))


def main(argv=None) -> int:
    args = parse_args(argv)
    eargs = eval_lola.parse_args(["--lola", str(args.lola), "--work", str(args.work), "--config", str(args.config),
                                  "--catalogue", str(args.catalogue)] + (["--quiet"] if args.quiet else []))
    from detectron2_rfcn.config import get_rfcn_cfg
    from detectron2_rfcn.data import setup_crater_datasets
    from etl.catalogue import read_catalogue
    from etl.evaluation import Region, evaluate_atlas
    from etl.local_tiles import parse_boxes
    from etl.verifier import FEATURES, CraterVerifier, VerifierSettings, rescore

    views = [] if args.tta in ("", "none") else [v for v in args.tta.split(",") if v]
    opts = ["DATASETS.CRATER.DIR", str(args.work / "tiles"), "MODEL.DEVICE", "cpu", "MODEL.RFCN.DIAMETER_SCALE", "1.0",
            "TEST.CRATER_TTA.TRANSFORMS", str(views)]
    cfg = get_rfcn_cfg(str(args.config), opts)
    setup_crater_datasets(cfg)
    tag = "" if not views else "_tta-" + "-".join(views)
    reference = read_catalogue(args.catalogue)
    limit = eargs.complete_above_km
    settings = VerifierSettings(min_detector_score=args.min_detector_score)

    train_path = args.work / f"atlas_train{tag}.parquet"
    train_atlas = eval_lola.atlas(eargs, cfg, args.weights, eval_lola.TRAIN, train_path, margin_deg=0.0)
    in_train = np.zeros(len(train_atlas), bool)
    for box in parse_boxes(eval_lola.TRAIN):
        in_train |= box.contains(train_atlas.lon.to_numpy(float), train_atlas.lat.to_numpy(float))
    train_atlas = train_atlas[in_train].reset_index(drop=True)
    val_path = args.work / f"atlas_val{tag}.parquet"
    val_atlas = eval_lola.atlas(eargs, cfg, args.weights, eval_lola.VAL, val_path)

    measured = train_atlas.score.to_numpy(float) >= settings.min_detector_score
    sample_tag = ""
    if 0 < args.max_train_detections < measured.sum():
        # A random sample to measure and fit on; the basin flag still sees the whole atlas.
        keep = np.random.default_rng(0).choice(np.flatnonzero(measured), args.max_train_detections, replace=False)
        measured = np.zeros(len(train_atlas), bool)
        measured[keep] = True
        sample_tag = f"_sample{args.max_train_detections}"
    train_features = eval_lola.atlas_features(eargs, train_atlas, settings,
                                              train_path.with_name("atlas_train_in" + tag + ".parquet"),
                                              measure=measured, tag=sample_tag)
    val_features = eval_lola.atlas_features(eargs, val_atlas, settings, val_path)
    y = labels_of(train_atlas, reference, limit)
    y_fit = np.where(measured, y, np.nan)
    b = parse_boxes(eval_lola.VAL)[0]
    val_region = Region(b.lon_min, b.lat_min, b.lon_max, b.lat_max)
    # Val's labels, for --stack-on-val: detections inside the val box only (its margin reaches east of 0,
    # outside the labelled west, where an unmatched detection is not known to be a non-crater).
    in_val = b.contains(val_atlas.lon.to_numpy(float), val_atlas.lat.to_numpy(float))
    y_val = np.where(in_val & (val_atlas.score.to_numpy(float) >= settings.min_detector_score),
                     labels_of(val_atlas, reference, limit), np.nan)

    def val_scores(frame):
        r = evaluate_atlas(frame, reference, region=val_region, min_diameter_km=limit, rules=("deepmoon",),
                           target_precision=0.85)["rules"]["deepmoon"]
        return {k: r[k] for k in ("recall_at_precision_0.85", "best_f1", "best_f1_score_thresh", "num_reference")}

    detector_val = val_scores(val_atlas)
    print(f"train detections {len(train_atlas)} (measured {int(measured.sum())}): craters {int(np.nansum(y_fit))}, "
          f"non-craters {int(np.sum(y_fit == 0))}; val detector alone {detector_val}")
    trials = []
    for l2 in (float(v) for v in args.l2.split(",")):
        model = (CraterVerifier.fit_stacked(train_features, y_fit, val_features, y_val, l2=l2, settings=settings)
                 if args.stack_on_val else CraterVerifier.fit(train_features, y_fit, l2=l2, settings=settings))
        res = val_scores(rescore(val_atlas, model, val_features))
        trials.append((l2, model, res))
        print(f"l2 {l2:g}: val {res}; coef " + ", ".join(f"{n} {c:+.2f}" for n, c in zip(FEATURES, model.coef)))
    l2, model, res = max(trials, key=lambda t: (t[2]["recall_at_precision_0.85"], t[2]["best_f1"]))
    model.score_threshold = res["best_f1_score_thresh"]
    model.notes = {**model.notes, "detector": {"config": eval_lola.config_name(args.config),
                                "weights": f"{args.weights.parent.name}/{args.weights.name}", "tta": views},
                   "trained_on": eval_lola.TRAIN, "chosen_on": eval_lola.VAL,
                   "stacked_on": eval_lola.VAL if args.stack_on_val else None,
                   "labels": "DeepMoon rule against Head 2010; unmatched detections < 20 km unlabelled",
                   "num_craters": int(np.nansum(y_fit)), "num_non_craters": int(np.sum(y_fit == 0)),
                   "val": res}
    model_out = args.model_out or args.weights.parent / "verifier.json"
    model.save(model_out)
    result = {"detector": model.notes["detector"], "min_detector_score": args.min_detector_score,
              "max_train_detections": args.max_train_detections, "stack_on_val": args.stack_on_val,
              "val_stack_sample": {"craters": int(np.nansum(y_val)), "non_craters": int(np.sum(y_val == 0))},
              "train": {"detections": len(train_atlas), "measured": int(measured.sum()),
                        "craters": int(np.nansum(y_fit)), "non_craters": int(np.sum(y_fit == 0)),
                        "unlabelled": int(np.sum(measured & np.isnan(y)))},
              "val_detector_alone": detector_val,
              "val_by_l2": [{"l2": t[0], **t[2], "coef": dict(zip(FEATURES, t[1].coef.tolist()))} for t in trials],
              "chosen_l2": l2, "model": model.to_dict()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"chosen l2 {l2:g}: val {res}; wrote {model_out} and {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
