"""``deepcraters ages``: date every crater of an atlas with a trained age network (``age_net``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_context_options(parser: argparse.ArgumentParser) -> None:
    """``--albedo`` and ``--context-craters`` as training takes them (``age_net.engine``, imported only here:
    building this parser must not import torch for other subcommands)."""
    from age_net.engine import add_context_options as add

    add(parser)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters ages",
        description="Crop every crater of an atlas from the DOM / DEM mosaics (round, in a local projection, "
                    "the DEM in metres), measure its attributes, and classify it into the five lunar systems "
                    "(pNc, Nc, Ic, Ec, Cc) with a trained age network (tools/train_age_net.py). Writes the age "
                    "table (five calibrated probabilities, class, entropy, keyed by the atlas's crater_id) with "
                    "its provenance; 'deepcraters load ages' takes it unchanged. Craters whose crop is not "
                    "measurable (mosaic edge, nodata) are left out and counted. A model trained on attributes of "
                    "another schema (e.g. other units, crater materials on/off, other relative-age evidence) is refused. "
                    "A model trained with relative-age evidence (ATTRIBUTES.CONTEXT: superposed craters, dated "
                    "basins, albedo rays) measures it again from its own config: superposition on the atlas's "
                    "craters (plus --context-craters), rays on --albedo (default: --dom).",
        epilog="example:\n  deepcraters ages --atlas atlas.gpkg --dom dom.tif --dem dem.tif --units data/world \\\n"
               "      --model output/age_net/trial0/model_final.pth --out ages.parquet\n"
               "a model trained with ATTRIBUTES.CONTEXT superposition,rays, dated against its training catalogue:\n"
               "  deepcraters ages --atlas atlas.gpkg --dom dom.tif --dem dem.tif --units data/world \\\n"
               "      --context-craters data/world/catalogue.csv --model output/age_ctx/trial0/model_final.pth \\\n"
               "      --out ages.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atlas", required=True, type=Path, help="atlas file (.gpkg, .parquet, .csv; etl.contracts)")
    p.add_argument("--model", required=True, type=Path, help="age-net checkpoint (model_final.pth)")
    p.add_argument("--out", required=True, type=Path, help="age table to write (.parquet, .gpkg, .csv)")
    p.add_argument("--dom", type=Path, default=None, help="orthophoto mosaic (needed when the model reads a DOM)")
    p.add_argument("--dem", type=Path, default=None, help="elevation mosaic in metres (needed when the model "
                                                           "reads a DEM)")
    p.add_argument("--units", default=None, help="geologic units as at training: a synthetic world directory or "
                                                 "its units.tif, or a USGS label-point CSV")
    add_context_options(p)
    p.add_argument("--run-name", default=None, help="age run name (default: the output file's stem)")
    p.add_argument("--assume-crs", default=None, help="lunar CRS for mosaics that lack one (e.g. IAU_2015:30100)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.atlas, args.model, args.dom, args.dem, args.albedo, args.context_craters):
        if path is not None and not Path(path).exists():
            print(f"deepcraters ages: {path}: no such file", file=sys.stderr)
            return 2
    from age_net.data import unit_source
    from age_net.predict import write_atlas_ages
    from etl.attributes import AttributeSchemaError
    from etl.contracts import ContractError
    from etl.geometry import LunarCRSError
    from etl.rasters import RasterError

    try:
        ages, skipped = write_atlas_ages(args.atlas, args.model, args.out, dom_path=args.dom, dem_path=args.dem,
                                         units=unit_source(args.units), run_name=args.run_name,
                                         assume_crs=args.assume_crs, device=args.device, albedo=args.albedo,
                                         context_craters=args.context_craters, progress=not args.quiet)
    except (AttributeSchemaError, ContractError, LunarCRSError, RasterError, ValueError) as exc:
        print(f"deepcraters ages: {exc}", file=sys.stderr)
        return 1
    counts = ages["age_class"].value_counts()
    print(f"{args.out}: {len(ages)} craters dated ("
          + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in ("pNc", "Nc", "Ic", "Ec", "Cc")) + ")"
          + (f"; {len(skipped)} not measurable, e.g. {skipped[0]}" if skipped else ""))
    return 0
