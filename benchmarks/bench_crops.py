"""Benchmark crater-crop extraction (and attributes) on CPU.

Generates a synthetic world (``deepcraters synth``'s generator, seeded), then times
:func:`etl.crops.extract_crops` over its whole catalogue: DOM + DEM, DEM only, at the age
network's crop size; then :func:`etl.attributes.crater_attributes` on those crops (with the
world's unit raster). Each figure is the median of ``--repeats`` runs, in crops per second
(one crop = one crater, all its layers). With ``--lunar DIR`` (the output of ``deepcraters
lunar-rasters ... --ages ...``) it also times the real LOLA/albedo mosaics over the Head 2010
west craters, with the USGS label points when ``--label-points`` is given.

    python benchmarks/bench_crops.py                     # ~1 min on 2 cores
    python benchmarks/bench_crops.py --lunar data/lola --label-points ../shared/data/geology/usgs2013_unit_label_points.csv
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etl.attributes import crater_attributes  # noqa: E402
from etl.crops import CropSettings, extract_crops  # noqa: E402
from etl.geology import UnitLabelPoints, UnitRaster  # noqa: E402
from etl.provenance import code_version  # noqa: E402
from etl.synthetic import generate_world  # noqa: E402


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _case(name: str, n: int, seconds: float, times: list[float], **extra) -> dict:
    row = {"case": name, "craters": n, "median_s": round(seconds, 4), "runs_s": [round(t, 4) for t in times],
           "per_s": round(n / seconds, 1), "s_per_1000": round(1000.0 * seconds / n, 3),
           "loadavg_1min": round(os.getloadavg()[0], 2), **extra}
    print(f"{name:<44} {n:>6} craters  {row['per_s']:>8.1f} /s  ({row['s_per_1000']:.2f} s per 1000)")
    return row


def bench_synthetic(args, out: list[dict]) -> None:
    settings = CropSettings(size_px=args.size_px, side_diameters=args.side_diameters)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_world(tmp, size_px=args.world_size, seed=args.seed)
        catalogue = pd.read_csv(summary.catalogue_path)
        n = len(catalogue)
        seconds, times, crops = _timed(lambda: extract_crops(catalogue, dom_path=summary.dom_path,
                                                             dem_path=summary.dem_path, settings=settings),
                                       args.repeats)
        out.append(_case("synthetic: crops DOM + DEM", n, seconds, times, valid=int(crops.valid.sum())))
        seconds, times, _ = _timed(lambda: extract_crops(catalogue, dem_path=summary.dem_path, settings=settings),
                                   args.repeats)
        out.append(_case("synthetic: crops DEM only", n, seconds, times))
        units = UnitRaster.synthetic(tmp)
        seconds, times, (attrs, schema) = _timed(lambda: crater_attributes(catalogue, crops, units=units),
                                                 args.repeats)
        out.append(_case("synthetic: attributes (+ unit raster)", n, seconds, times, attributes=len(schema.names)))


def bench_lunar(args, out: list[dict]) -> None:
    settings = CropSettings(size_px=args.size_px, side_diameters=args.side_diameters)
    lunar = Path(args.lunar)
    craters = pd.read_parquet(lunar / "ages_west.parquet")
    n = len(craters)
    seconds, times, crops = _timed(lambda: extract_crops(craters, dom_path=lunar / "dom.tif",
                                                         dem_path=lunar / "dem.tif", settings=settings), args.repeats)
    out.append(_case("LOLA + albedo: crops DOM + DEM", n, seconds, times, valid=int(crops.valid.sum())))
    if args.label_points:
        units = UnitLabelPoints.from_csv(args.label_points)
        for on in (False, True):
            seconds, times, (attrs, schema) = _timed(
                lambda: crater_attributes(craters, crops, units=units, crater_material_units=on), args.repeats)
            out.append(_case(f"LOLA: attributes (+ label points, crater mat. {'on' if on else 'off'})", n, seconds,
                             times, attributes=len(schema.names)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=2048, help="synthetic world width = height, pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size-px", type=int, default=CropSettings().size_px, help="crop size S")
    ap.add_argument("--side-diameters", type=float, default=CropSettings().side_diameters, help="crop side k, diameters")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lunar", default=None, help="directory with dem.tif, dom.tif, ages_west.parquet")
    ap.add_argument("--label-points", default=None, help="USGS 2013 unit label points CSV (with --lunar)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "crops.json"))
    args = ap.parse_args(argv)
    cases: list[dict] = []
    bench_synthetic(args, cases)
    if args.lunar:
        bench_lunar(args, cases)
    result = {
        "benchmark": "crater crops (etl.crops.extract_crops) and attributes (etl.attributes.crater_attributes)",
        "command": "python benchmarks/bench_crops.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"size_px": args.size_px, "side_diameters": args.side_diameters, "world_size_px": args.world_size,
                     "seed": args.seed, "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "code_version": code_version(),
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
