"""``deepcraters tiles``: cut DOM + DEM mosaics and a crater catalogue into a tile dataset."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be comma-separated integers, e.g. 1,2,4; got {text!r}")
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"levels must be downsample factors >= 1, got {text!r}")
    return levels


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"splits must be three numbers train,val,test; got {text!r}")
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"splits must be three non-negative numbers train,val,test; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="deepcraters tiles",
        description=(
            "Cut a DOM and a DEM mosaic (GeoTIFFs in a lunar CRS) and a crater catalogue into a Detectron2-ready "
            "dataset in OUT: tiles/<split>/<tile_id>.tif (float32, bands dom, dem, slope, georeferenced), "
            "train.json / val.json / test.json (COCO, boxes from each crater's rim circle projected through the "
            "mosaic's CRS) and dataset.json (channels, per-channel mean/std of the train tiles, CRS, levels, "
            "regions, provenance). Tiles come at several pyramid levels so small and large craters are both "
            "min..max px wide somewhere; train/val/test are split by region, so tiles of different splits never "
            "overlap. With --world DIR, the mosaics and catalogue of a 'deepcraters synth' world are used."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--world", help="a synthetic world directory (dom.tif, dem.tif, catalogue.csv)")
    ap.add_argument("--dom", help="orthophoto mosaic (GeoTIFF)")
    ap.add_argument("--dem", help="elevation mosaic (GeoTIFF, metres)")
    ap.add_argument("--catalogue", help="crater catalogue (CSV, GeoPackage, GeoJSON)")
    ap.add_argument("--lon-col", default="lon", help="catalogue longitude column (degrees, -180..180 or 0..360)")
    ap.add_argument("--lat-col", default="lat", help="catalogue latitude column (degrees)")
    ap.add_argument("--diameter-col", default="diameter_km", help="catalogue diameter column")
    ap.add_argument("--diameter-unit", default="km", choices=("km", "m"), help="unit of the diameter column")
    ap.add_argument("--age-col", default=None, help="catalogue age-class column (optional; kept in annotations)")
    ap.add_argument("--tile-size", type=int, default=512, help="tile side, pixels")
    ap.add_argument("--overlap", type=int, default=64, help="overlap between neighbouring tiles, pixels")
    ap.add_argument("--levels", type=_levels, default=(1, 2, 4), help="pyramid downsample factors, e.g. 1,2,4")
    ap.add_argument("--min-diameter-px", type=float, default=8.0, help="smallest crater labelled at a level, px")
    ap.add_argument("--max-diameter-px", type=float, default=300.0, help="largest crater labelled at a level, px")
    ap.add_argument("--splits", type=_fractions, default=(0.7, 0.15, 0.15),
                    help="share of regions for train,val,test")
    ap.add_argument("--region-size", type=int, default=None,
                    help="side of a split region, level-0 pixels (default: 2 x tile size, less on small mosaics)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the region-to-split assignment")
    ap.add_argument("--assume-crs", default=None,
                    help="lunar CRS to use when a mosaic has none or a non-lunar one (e.g. IAU_2015:30100)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    from etl.catalogue import CatalogueError
    from etl.geometry import LunarCRSError
    from etl.rasters import RasterError
    from etl.tiling import build_dataset

    ap = build_parser()
    args = ap.parse_args(argv)
    dom, dem, catalogue = args.dom, args.dem, args.catalogue
    if args.world:
        world = Path(args.world)
        dom, dem = dom or world / "dom.tif", dem or world / "dem.tif"
        catalogue = catalogue or world / "catalogue.csv"
    if not (dom and dem and catalogue):
        ap.error("give --world DIR, or all of --dom, --dem and --catalogue")
    options = dict(lon_col=args.lon_col, lat_col=args.lat_col, diameter_col=args.diameter_col,
                   diameter_unit=args.diameter_unit)
    if args.age_col:
        options["age_col"] = args.age_col
    try:
        summary = build_dataset(dom, dem, catalogue, args.out, tile_size_px=args.tile_size, overlap_px=args.overlap,
                                levels=args.levels, min_diameter_px=args.min_diameter_px,
                                max_diameter_px=args.max_diameter_px, split_fractions=args.splits,
                                region_size_px=args.region_size, seed=args.seed, assume_crs=args.assume_crs,
                                catalogue_options=options, progress=not args.quiet)
    except (RasterError, LunarCRSError, CatalogueError, FileExistsError, ValueError) as exc:
        # The messages name the file and what is wrong; a traceback would only bury them.
        print(f"deepcraters tiles: {exc}\nnothing written to {args.out}", file=sys.stderr)
        return 1
    parts = ", ".join(f"{s} {summary.tiles[s]} tiles / {summary.annotations[s]} craters" for s in summary.tiles)
    print(f"wrote {summary.dataset_json}: {parts}; dropped {summary.dropped_straddling} tiles across split "
          f"boundaries and {summary.dropped_empty} without data")
    partial = summary.dem_coverage is not None and summary.dem_coverage < 1.0
    if partial or summary.dropped_no_elevation:
        cover = "an unknown part" if summary.dem_coverage is None else f"{summary.dem_coverage:.1%}"
        print(f"the DEM covers {cover} of the DOM: {summary.dropped_no_elevation} tiles without elevation left out")
    return 0
