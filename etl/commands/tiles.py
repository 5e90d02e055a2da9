"""``deepcraters tiles``: cut DOM + DEM mosaics and a crater catalogue into a tile dataset."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.commands._options import add_local_projection_options, add_tile_grid_options, native_pixel_size_m


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
    add_tile_grid_options(ap)
    ap.add_argument("--splits", type=_fractions, default=(0.7, 0.15, 0.15),
                    help="share of regions for train,val,test (mosaic projection)")
    add_local_projection_options(ap)
    ap.add_argument("--channels", default="dom,dem,slope",
                    help="model input channels, in order, from dom, dem, slope, hillshade (local projection; a "
                         "DEM-only set needs no --dom)")
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}", default=None, metavar="BOXES",
                        help=f"local: the {split} region, lon/lat boxes "
                             f"--{split}=lon_min,lat_min,lon_max,lat_max[;...] "
                             "(disjoint from the other splits' boxes)")
    ap.add_argument("--labelled", default=None, metavar="BOXES",
                    help="local: where the catalogue is valid; tiles outside it are not cut (their craters would "
                         "be taught as background)")
    ap.add_argument("--complete-above-km", type=float, default=None,
                    help="the catalogue's completeness limit: smaller craters are unlabelled, not background "
                         "(local: not labelled, and ignored by training below this size)")
    ap.add_argument("--region-size", type=int, default=None,
                    help="side of a split region, level-0 pixels (default: 2 x tile size, less on small mosaics)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the region-to-split assignment")
    ap.add_argument("--assume-crs", default=None,
                    help="lunar CRS to use when a mosaic has none or a non-lunar one (e.g. IAU_2015:30100)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _catalogue_options(args) -> dict:
    """How to read the catalogue: its column names and diameter unit, from the options."""
    options = dict(lon_col=args.lon_col, lat_col=args.lat_col, diameter_col=args.diameter_col,
                   diameter_unit=args.diameter_unit)
    if args.age_col:
        options["age_col"] = args.age_col
    return options


def _main_local(ap, args, dom, dem, catalogue) -> int:
    from etl.catalogue import CatalogueError
    from etl.geometry import LunarCRSError
    from etl.local_tiles import build_local_dataset, parse_boxes
    from etl.rasters import RasterError

    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if not catalogue or not (dem or dom):
        ap.error("local projection: give --catalogue and --dem (and --dom for a 'dom' channel)")
    try:
        regions = {s: parse_boxes(getattr(args, s)) for s in ("train", "val", "test") if getattr(args, s)}
        if not regions:
            ap.error("local projection: give the split regions, e.g. --train -180,-60,-90,60 --test -80,-60,0,60")
        pixel_size_m = args.pixel_size_m or native_pixel_size_m(dem or dom, args.assume_crs)
        summary = build_local_dataset(
            dem, catalogue, args.out, dom_path=dom if "dom" in channels else None, regions=regions,
            labelled=parse_boxes(args.labelled), complete_above_km=args.complete_above_km, channels=channels,
            pixel_size_m=pixel_size_m, tile_size_px=args.tile_size, overlap_px=args.overlap, levels=args.levels,
            min_diameter_px=args.min_diameter_px, max_diameter_px=args.max_diameter_px,
            sun_azimuth_deg=args.sun_azimuth, sun_elevation_deg=args.sun_elevation, assume_crs=args.assume_crs,
            catalogue_options=_catalogue_options(args), progress=not args.quiet)
    except (RasterError, LunarCRSError, CatalogueError, FileExistsError, ValueError) as exc:
        print(f"deepcraters tiles: {exc}\nnothing written to {args.out}", file=sys.stderr)
        return 1
    parts = ", ".join(f"{s} {summary.tiles[s]} tiles / {summary.annotations[s]} craters" for s in summary.tiles)
    print(f"wrote {summary.dataset_json}: {parts} (local projection, {pixel_size_m:.0f} m level-1 pixels); "
          f"{summary.dropped_empty} tiles without data left out")
    return 0


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
    if args.projection == "local":
        return _main_local(ap, args, dom, dem, catalogue)
    if not (dom and dem and catalogue):
        ap.error("give --world DIR, or all of --dom, --dem and --catalogue")
    try:
        summary = build_dataset(dom, dem, catalogue, args.out, tile_size_px=args.tile_size, overlap_px=args.overlap,
                                levels=args.levels, min_diameter_px=args.min_diameter_px,
                                max_diameter_px=args.max_diameter_px, split_fractions=args.splits,
                                region_size_px=args.region_size, seed=args.seed, assume_crs=args.assume_crs,
                                catalogue_options=_catalogue_options(args), progress=not args.quiet)
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
