"""``deepcraters evaluate``: score an atlas against a reference catalogue, in lunar coordinates."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters evaluate",
        description="Score an atlas (lon, lat, diameter_km, score) against a reference catalogue (lon, lat, "
                    "diameter_km): precision, recall, F1, best F1 over score thresholds, recall at precision "
                    ">= 0.9, and median centre / diameter errors (relative to the reference diameter), overall "
                    "and by diameter bin, under the project's matching rule and DeepMoon's (etl.matching); and "
                    "the cumulative size-frequency distributions of both, log-log, per km^2, as a PNG. Reference "
                    "craters under --min-diameter-km are unlabelled, not background: atlas craters that match "
                    "them, or are that small, are neither hits nor false positives.",
        epilog="example:\n  deepcraters evaluate atlas.gpkg ../shared/data/catalogues/head2010_west.csv \\\n"
               "      --region -180 -60 -90 60 --min-diameter-km 20 --sfd sfd.png --json scores.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("atlas", type=Path, help="atlas file (.gpkg, .parquet, .csv) from `deepcraters atlas`, or any "
                                            "catalogue with lon, lat, diameter_km (score optional)")
    p.add_argument("reference", type=Path, help="reference catalogue (lon, lat, diameter_km)")
    p.add_argument("--region", type=float, nargs=4, metavar=("LON_MIN", "LAT_MIN", "LON_MAX", "LAT_MAX"),
                   default=None, help="score only craters centred in this lon/lat box, degrees (LON_MIN > LON_MAX "
                                      "crosses the antimeridian; default: the reference's extent)")
    p.add_argument("--min-diameter-km", type=float, default=0.0,
                   help="completeness limit of the reference, km (Head 2010: 20)")
    p.add_argument("--boundary", choices=["detected", "symmetric"], default="detected",
                   help="an unmatched atlas crater near --min-diameter-km: 'detected' counts it as a false positive "
                        "when its own diameter is >= the limit; 'symmetric' only from 1.25 x the limit (the strict "
                        "rule's diameter tolerance: under it, it may be a crater under the limit measured a little "
                        "large), as a reference crater >= the limit may be matched by a detection under it "
                        "(etl.evaluation)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="score only atlas craters scoring at least this (default: all in the file)")
    p.add_argument("--rules", nargs="+", default=["project", "deepmoon"],
                   help="matching rules of etl.matching.RULES (project, deepmoon, strict)")
    p.add_argument("--bins-km", type=float, nargs="+", default=None,
                   help="diameter bin edges, km (default: doubling from the smallest scored diameter)")
    p.add_argument("--sfd", type=Path, default=None, help="write the cumulative size-frequency PNG here")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON here")
    return p


def _pct(v: float) -> str:
    return "   -" if v != v else f"{100 * v:5.1f}"


def format_report(res: dict) -> str:
    """The summary as text, units in every header."""
    r = res["region"]
    lines = [f"region lon {r['lon_min']:g}..{r['lon_max']:g} deg, lat {r['lat_min']:g}..{r['lat_max']:g} deg "
             f"({res['area_km2']:,.0f} km^2); reference craters >= {res['min_diameter_km']:g} km"
             + ("" if res["score_threshold"] is None else f"; atlas score >= {res['score_threshold']:g}")]
    for name, m in res["rules"].items():
        tp_key = next(k for k in m if k.startswith("recall_at_precision_"))
        lines += ["", f"rule {name}: {m['num_reference']} reference craters, {m['num_atlas']} atlas craters, "
                      f"{m['true_positives']} matched",
                  f"  precision {_pct(m['precision'])} %  recall {_pct(m['recall'])} %  F1 {_pct(m['f1'])} %  "
                  f"best F1 {_pct(m['best_f1'])} % (score >= {m['best_f1_score_thresh']:.3f})  "
                  f"recall at precision >= {float(tp_key.rsplit('_', 1)[1]):g}: {_pct(m[tp_key])} %",
                  f"  median errors of matched craters: centre {_pct(m['median_centre_error_frac'])} % of D_ref, "
                  f"|diameter| {_pct(m['median_abs_diameter_error_frac'])} % of D_ref, diameter bias "
                  f"{_pct(m['median_diameter_bias_frac'])} % (+ = atlas too large)",
                  "  D_ref (km)       n_ref  n_atlas  recall %  precision %  centre err %  |D err| %  D bias %"]
        for b in m["bins"]:
            hi = "inf" if not np.isfinite(b["diameter_km_max"]) else f"{b['diameter_km_max']:g}"
            lines.append(f"  {b['diameter_km_min']:>6g} - {hi:<7} {b['num_reference']:>6} {b['num_atlas']:>8}     "
                         f"{_pct(b['recall'])}        {_pct(b['precision'])}         "
                         f"{_pct(b['median_centre_error_frac'])}      {_pct(b['median_abs_diameter_error_frac'])}"
                         f"     {_pct(b['median_diameter_bias_frac'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from etl.catalogue import read_catalogue
    from etl.contracts import ContractError
    from etl.evaluation import Region, evaluate_atlas, plot_sfd
    from etl.matching import RULES

    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        print(f"deepcraters evaluate: unknown rule(s) {unknown}; known: {sorted(RULES)}", file=sys.stderr)
        return 2
    for path in (args.atlas, args.reference):
        if not path.is_file():
            print(f"deepcraters evaluate: {path}: no such file", file=sys.stderr)
            return 2
    try:
        # An atlas may hold near-duplicates (that is part of what is scored): keep them.
        atlas = read_catalogue(args.atlas, on_duplicate="keep")
        reference = read_catalogue(args.reference, on_duplicate="keep")
    except (ContractError, ValueError, OSError) as exc:
        print(f"deepcraters evaluate: {exc}", file=sys.stderr)
        return 1
    region = Region(*args.region) if args.region else None
    res = evaluate_atlas(atlas, reference, region=region, min_diameter_km=args.min_diameter_km,
                         score_threshold=args.score_threshold, rules=tuple(args.rules), bins_km=args.bins_km,
                         boundary=args.boundary)
    sfd = res.pop("_sfd")
    print(format_report(res))
    if args.sfd:
        args.sfd.parent.mkdir(parents=True, exist_ok=True)
        plot_sfd(sfd["atlas_km"], sfd["reference_km"], res["area_km2"], args.sfd,
                 min_diameter_km=args.min_diameter_km, labels=(args.atlas.name, args.reference.name))
        print(f"wrote {args.sfd}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
