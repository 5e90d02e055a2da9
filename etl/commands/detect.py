"""``deepcraters detect``: craters of plain images (NAC PNGs; no georeference) at native size."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters detect",
        description="Detect the craters of plain images (PNG, JPEG or TIFF frames such as LRO NAC images; one "
                    "grey DOM channel) with a trained R-FCN, at the image's native size: large images are cut "
                    "into overlapping tiles and the views merged, with no cap on the number of craters. Writes "
                    "OUT/<image>.csv (x0_px, y0_px, x1_px, y1_px, score, x_px, y_px, diameter_px) per image and "
                    "OUT/coco_results.json (COCO results: bbox [x, y, w, h] px, score) for all.",
        epilog="example:\n  deepcraters detect frames/*.png --config-file output/nac/config.yaml \\\n"
               "      --weights output/nac/model_final.pth --out detections/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--config-file", required=True, type=Path, help="the detector's YAML (OUTPUT_DIR/config.yaml "
                                                                   "of training, which holds its calibrated threshold)")
    p.add_argument("--weights", required=True, type=Path, help="trained weights (.pth / .pkl)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum score (default: the model's calibrated threshold, else 0.5; 0 keeps every "
                        "detection, e.g. for precision-recall curves)")
    p.add_argument("--tile-size", type=int, default=512, help="tile side, px (images up to this size are one tile)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap, px")
    p.add_argument("--quiet", action="store_true", help="no per-image lines")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="config override (repeatable), e.g. --set MODEL.DEVICE cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (*args.images, args.weights, args.config_file):
        if not path.is_file():
            print(f"deepcraters detect: {path}: no such file", file=sys.stderr)
            return 2
    from detectron2_rfcn.atlas import CraterPredictor
    from detectron2_rfcn.config import default_score_threshold, get_rfcn_cfg
    from detectron2_rfcn.image_detect import detect_image, read_plain_image, uncapped_config, write_detections

    cfg = get_rfcn_cfg(str(args.config_file), [v for kv in args.set for v in kv])
    if len(cfg.MODEL.PIXEL_MEAN) != 1:
        print(f"deepcraters detect: the model takes {len(cfg.MODEL.PIXEL_MEAN)} channels "
              f"({', '.join(cfg.MODEL.RFCN.INPUT_CHANNELS)}); a plain image gives one (dom). Use "
              "`deepcraters atlas` for DOM + DEM mosaics", file=sys.stderr)
        return 2
    threshold = default_score_threshold(cfg) if args.score_threshold is None else args.score_threshold
    predictor = CraterPredictor.from_config(uncapped_config(cfg, args.tile_size), str(args.weights))
    results = []
    for path in args.images:
        try:
            image = read_plain_image(path)
        except OSError as exc:
            print(f"deepcraters detect: {path}: {exc}", file=sys.stderr)
            return 1
        boxes, scores = detect_image(lambda c: predictor(c), image, tile_size_px=args.tile_size,
                                     overlap_px=args.overlap, score_threshold=threshold)
        results.append((path, boxes, scores, image.shape[1:]))
        if not args.quiet:
            print(f"{path.name}: {len(boxes)} craters (score >= {threshold:.3f})")
    written = write_detections(results, args.out)
    print(f"wrote {len(written) - 1} CSV files and {written[-1]}")
    return 0
