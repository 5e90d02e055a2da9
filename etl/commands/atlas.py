"""``deepcraters atlas``: detect every crater of a DOM + DEM mosaic with a trained R-FCN."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.commands._options import add_local_projection_options, add_tile_grid_options, native_pixel_size_m


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters atlas",
        description="Sweep a whole DOM + DEM mosaic (any size: tiles are read lazily) at one or more "
                    "pyramid levels with a trained R-FCN, in chunks of tiles (resumable; in this process or "
                    "on Ray), merge the detections of overlapping tiles, chunks and levels (one crater by "
                    "etl.matching's rule), and write the atlas (lon, lat, diameter_km, score, pixel box, "
                    "level) with its provenance. The file type follows the suffix: .gpkg, .parquet or .csv.",
        epilog="example:\n  deepcraters atlas --config-file configs/rfcn_timm_R_18_C4_1000it.yaml \\\n"
               "      --weights output/rfcn/model_final.pth --dom dom.tif --dem dem.tif --out atlas.gpkg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the detector's YAML (as used for training)")
    p.add_argument("--weights", required=True, help="trained weights (.pth / .pkl)")
    p.add_argument("--dom", type=Path, default=None, help="orthophoto mosaic (GeoTIFF, lunar CRS); not needed by "
                                                          "a DEM-only model with --projection local")
    p.add_argument("--dem", required=True, type=Path, help="elevation mosaic (GeoTIFF, lunar CRS; resampled "
                                                           "onto the DOM grid when it differs)")
    p.add_argument("--out", required=True, type=Path, help="atlas file to write (.gpkg, .parquet, .csv)")
    p.add_argument("--run-name", default=None, help="detection run name (default: the output file's stem)")
    p.add_argument("--assume-crs", default=None,
                   help="lunar CRS for mosaics that lack one (e.g. IAU_2015:30100); never needed otherwise")
    add_tile_grid_options(p)
    add_local_projection_options(p)
    p.add_argument("--region", default=None, metavar="BOXES",
                   help="local: map only these lon/lat boxes, --region=lon_min,lat_min,lon_max,lat_max[;...] "
                        "(default: the "
                        "whole Moon); one pass in this process (no chunks)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum detection score (default: the model's calibrated threshold, recorded in the "
                        "config.yaml that training wrote; 0.5 for an uncalibrated model)")
    p.add_argument("--chunk-tiles", type=int, default=256,
                   help="tiles per chunk of work (a square block of one level's tiles); each chunk's detections "
                        "are written once to the work directory, so an interrupted atlas resumes")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where chunk files are kept (default: OUT.work beside the atlas); delete it to start over")
    p.add_argument("--engine", choices=["inprocess", "ray"], default="inprocess",
                   help="inprocess: one worker in this process; ray: one model per Ray actor (one GPU each "
                        "when the cluster has GPUs)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. 'auto' or HOST:6379; default: start a local Ray for this run)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: one per GPU, else one per --cpus-per-worker CPUs)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (torch threads) per Ray actor")
    from etl.matching import PROJECT_RULE, RULES

    p.add_argument("--merge-rule", choices=sorted(RULES), default=PROJECT_RULE.name,
                   help="when two detections are one crater (etl.matching's rules; 'strict' keeps more craters "
                        "superposed on one of about their size apart)")
    p.add_argument("--plan-only", action="store_true",
                   help="print the plan (tiles and chunks per level, chunks already done) and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dom is None and args.projection == "mosaic":
        print("deepcraters atlas: --dom is needed (or --projection local with a DEM-only model)", file=sys.stderr)
        return 2
    for path in (p for p in (args.dom, args.dem, Path(args.weights), Path(args.config_file)) if p is not None):
        if not path.exists():
            print(f"deepcraters atlas: {path}: no such file", file=sys.stderr)
            return 2
    from detectron2_rfcn.atlas import AtlasSettings
    from detectron2_rfcn.atlas_scale import (ScaleSettings, default_work_dir, describe_plan, model_key, plan_mosaic,
                                             write_mosaic_atlas_chunked)
    from detectron2_rfcn.config import default_score_threshold, get_rfcn_cfg
    from etl.contracts import ContractError
    from etl.geometry import LunarCRSError
    from etl.matching import RULES
    from etl.rasters import RasterError

    try:
        threshold = (default_score_threshold(get_rfcn_cfg(args.config_file, args.opts))
                     if args.score_threshold is None else args.score_threshold)
        settings = AtlasSettings(levels=tuple(args.levels), tile_size_px=args.tile_size, overlap_px=args.overlap,
                                 min_diameter_px=args.min_diameter_px, max_diameter_px=args.max_diameter_px,
                                 score_threshold=threshold)
        if args.projection == "local":
            from detectron2_rfcn.atlas_local import GLOBE, write_local_atlas
            from etl.local_tiles import parse_boxes

            cfg = get_rfcn_cfg(args.config_file, args.opts)
            atlas = write_local_atlas(
                cfg, args.weights, args.out, dem_path=args.dem, dom_path=args.dom,
                run_name=args.run_name or args.out.stem,
                pixel_size_m=args.pixel_size_m or native_pixel_size_m(args.dem, args.assume_crs), settings=settings,
                regions=parse_boxes(args.region) or (GLOBE,), sun_azimuth_deg=args.sun_azimuth,
                sun_elevation_deg=args.sun_elevation, assume_crs=args.assume_crs, progress=not args.quiet)
            print(f"{args.out}: {len(atlas)} craters")
            return 0
        scale = ScaleSettings(chunk_tiles=args.chunk_tiles, batch_size=args.batch_size)
        cfg = get_rfcn_cfg(args.config_file, args.opts)
        if args.plan_only:
            plan = plan_mosaic(args.dom, args.dem, model_key(cfg, args.weights), settings=settings, scale=scale,
                               assume_crs=args.assume_crs)
            print(describe_plan(plan, settings, args.work_dir or default_work_dir(args.out)))
            return 0
        atlas, stats = write_mosaic_atlas_chunked(
            cfg, args.weights, args.dom, args.dem, args.out, run_name=args.run_name or args.out.stem,
            work_dir=args.work_dir, settings=settings, scale=scale, engine=args.engine, address=args.address,
            workers=args.workers, cpus_per_worker=args.cpus_per_worker, assume_crs=args.assume_crs,
            merge_rule=RULES[args.merge_rule], progress=not args.quiet)
    except (ValueError, RasterError, LunarCRSError, ContractError) as exc:
        print(f"deepcraters atlas: {exc}", file=sys.stderr)
        return 1
    print(stats.summary())
    print(f"{args.out}: {len(atlas)} craters")
    return 0
