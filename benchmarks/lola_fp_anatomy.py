"""What the false positives and misses of a LOLA atlas are, on the test box at a threshold
(DeepMoon rule, the "detected" completeness boundary of ``etl.evaluation``).

    python benchmarks/lola_fp_anatomy.py --atlas WORK/atlas_test.parquet --threshold T --lola LOLA_DIR \\
        --out benchmarks/results/lola_fp_anatomy.json

False positives (counted detections matching no Head crater), by diameter bin: duplicates (they
match a Head crater that a higher-scoring detection took), inside a large crater or basin (centre
within 0.6 D of a Head crater >= 150 km: rings and floors), near a Head crater that the rule
refuses (a Head centre within one detection diameter), and by pyramid level. Misses: whether a
detection under the threshold matches them, by diameter bin and latitude band.

Are unmatched detections craters? The depth profile on the DEM: (mean elevation on the rim circle
- mean elevation at the centre and on a circle of 0.15 D) / D, in metres per km, for matched
detections (TP), unmatched ones (FP) and random places with the same diameters (the test box), by
diameter bin. A crater-shaped depression scores tens of m/km, flat or random ground about 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import eval_lola  # noqa: E402
from etl.evaluation import Region  # noqa: E402
from etl.matching import DEEPMOON_RULE, has_match, match_one_to_one  # noqa: E402
from etl.moon import MOON_RADIUS_KM, great_circle_distance_m  # noqa: E402

TEST = Region(-120.0, -60.0, -60.0, 60.0)
BINS = [20.0, 25.0, 30.0, 40.0, 60.0, 100.0, np.inf]
BANDS = [(-60, -30), (-30, 0), (0, 30), (30, 60)]


def by_bin(d_km) -> dict:
    d = np.asarray(d_km, dtype=float)
    return {f"{lo:g}-{hi:g}": int(((d >= lo) & (d < hi)).sum()) for lo, hi in zip(BINS[:-1], BINS[1:])}


def band_counts(lat_deg) -> dict:
    lat = np.asarray(lat_deg, dtype=float)
    return {f"{lo}..{hi}": int(((lat > lo) & (lat <= hi)).sum()) for lo, hi in BANDS}


class DemSampler:
    """Bilinear elevation (m) at lon/lat from a simple-cylindrical DEM."""

    def __init__(self, path: Path):
        import rasterio

        with rasterio.open(path) as ds:
            self.z, self.inv = ds.read(1).astype(float), ~ds.transform

    def __call__(self, lon, lat):
        col, row = self.inv * (np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        c0 = np.clip(np.floor(col - 0.5).astype(int), 0, self.z.shape[1] - 2)
        r0 = np.clip(np.floor(row - 0.5).astype(int), 0, self.z.shape[0] - 2)
        fc, fr = np.clip(col - 0.5 - c0, 0, 1), np.clip(row - 0.5 - r0, 0, 1)
        z = self.z
        return (z[r0, c0] * (1 - fc) * (1 - fr) + z[r0, c0 + 1] * fc * (1 - fr) + z[r0 + 1, c0] * (1 - fc) * fr
                + z[r0 + 1, c0 + 1] * fc * fr)

    def depth_per_km(self, lon, lat, d_km) -> np.ndarray:
        ang = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
        out = []
        for lo, la, d in zip(np.asarray(lon, float), np.asarray(lat, float), np.asarray(d_km, float)):
            def ring(r_km):
                step = np.degrees(r_km / MOON_RADIUS_KM)
                return self(lo + step * np.cos(ang) / np.cos(np.radians(la)), la + step * np.sin(ang))
            floor = np.mean(np.concatenate([[self(lo, la)], ring(0.15 * d)]))
            out.append((ring(0.5 * d).mean() - floor) / d)
        return np.array(out)


def quantiles(v) -> dict:
    v = np.asarray(v, dtype=float)
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": int(len(v)), "q10_q25_median_q75_q90_m_per_km": [round(float(x), 1) for x in q],
            "share_deeper_than_40_m_per_km": round(float(np.mean(v > 40.0)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", type=Path, required=True, help="an eval_lola atlas (parquet) holding the test box")
    ap.add_argument("--threshold", type=float, required=True, help="score threshold (eval_lola's val threshold)")
    eval_lola.add_data_args(ap)
    ap.add_argument("--limit-km", type=float, default=20.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not (args.lola / "dem.tif").is_file() or not args.catalogue.is_file() or not args.atlas.is_file():
        print("lola_fp_anatomy: needs --atlas, LOLA_DIR/dem.tif and the Head 2010 catalogue", file=sys.stderr)
        return 2
    head = pd.read_csv(args.catalogue)
    full = pd.read_parquet(args.atlas).reset_index(drop=True)
    a = full[full.score >= args.threshold].reset_index(drop=True)
    m = match_one_to_one(a.lon, a.lat, a.diameter_km, a.score, head.lon, head.lat, head.diameter_km, DEEPMOON_RULE)
    counted_ref = TEST.contains(head.lon, head.lat) & (head.diameter_km.to_numpy() >= args.limit_km)
    hit = m >= 0
    hit_counted = hit & counted_ref[np.maximum(m, 0)]
    counted = TEST.contains(a.lon, a.lat) & ~(hit & ~hit_counted) & (hit_counted | (a.diameter_km >= args.limit_km))
    fp, tp = a[counted & ~hit_counted], a[counted & hit_counted]
    # False positives: duplicates, inside large craters, near a Head crater the rule refuses.
    dup = has_match(fp.lon, fp.lat, fp.diameter_km, head.lon, head.lat, head.diameter_km, DEEPMOON_RULE)
    big = head[head.diameter_km >= 150.0]
    inside = np.zeros(len(fp), dtype=bool)
    for b in big.itertuples():
        dist_km = great_circle_distance_m(fp.lon.to_numpy(), fp.lat.to_numpy(), b.lon, b.lat) / 1000.0
        inside |= dist_km < 0.6 * b.diameter_km
    near = np.zeros(len(fp), dtype=bool)
    for i, f in enumerate(fp.itertuples()):
        dist = great_circle_distance_m(f.lon, f.lat, head.lon.to_numpy(), head.lat.to_numpy()) / 1000.0
        near[i] = bool((dist < f.diameter_km).any())
    # Misses.
    found = np.zeros(len(head), dtype=bool)
    found[m[counted & hit_counted]] = True
    missed = head[counted_ref & ~found]
    m_all = match_one_to_one(full.lon, full.lat, full.diameter_km, full.score, head.lon, head.lat, head.diameter_km,
                             DEEPMOON_RULE)
    seen = np.zeros(len(head), dtype=bool)
    seen[m_all[m_all >= 0]] = True
    seen_missed = seen[counted_ref & ~found]
    # Depth profiles.
    dem = DemSampler(args.lola / "dem.tif")
    rng = np.random.default_rng(0)
    depth = {}
    for lo, hi in zip(BINS[:4], BINS[1:5]):
        sel_tp = tp[(tp.diameter_km >= lo) & (tp.diameter_km < hi)]
        sel_fp = fp[(fp.diameter_km >= lo) & (fp.diameter_km < hi)]
        n = 300
        rlon = rng.uniform(TEST.lon_min + 2, TEST.lon_max - 2, n)
        sin_lat = rng.uniform(np.sin(np.radians(TEST.lat_min + 2)), np.sin(np.radians(TEST.lat_max - 2)), n)
        rlat = np.degrees(np.arcsin(sin_lat))
        depth[f"{lo:g}-{hi:g}"] = {
            "matched": quantiles(dem.depth_per_km(sel_tp.lon, sel_tp.lat, sel_tp.diameter_km)),
            "unmatched": quantiles(dem.depth_per_km(sel_fp.lon, sel_fp.lat, sel_fp.diameter_km)),
            "random_places": quantiles(dem.depth_per_km(rlon, rlat, rng.uniform(lo, hi, n)))}
    result = {
        "atlas": args.atlas.name, "threshold": args.threshold, "rule": "deepmoon", "boundary": "detected",
        "counted": int(counted.sum()), "true_positives": int(len(tp)), "false_positives": int(len(fp)),
        "num_reference": int(counted_ref.sum()),
        "false_positives_by_diameter_km": by_bin(fp.diameter_km),
        "true_positives_by_diameter_km": by_bin(tp.diameter_km),
        "false_positives_duplicates": int(dup.sum()),
        "false_positives_inside_a_crater_of_150_km_or_more": int(inside.sum()),
        "false_positives_inside_large_by_diameter_km": by_bin(fp.diameter_km[inside]),
        "false_positives_near_a_head_crater_the_rule_refuses": int(near.sum()),
        "false_positives_near_by_diameter_km": by_bin(fp.diameter_km[near]),
        "false_positives_by_level": {str(k): int(v) for k, v in fp.level.value_counts().sort_index().items()},
        "misses": int(len(missed)), "misses_with_a_detection_under_the_threshold": int(seen_missed.sum()),
        "misses_by_diameter_km": by_bin(missed.diameter_km),
        "misses_by_latitude_band": band_counts(missed.lat),
        "reference_by_latitude_band": band_counts(head.lat[counted_ref]),
        "depth_profile_by_diameter_km": depth,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "depth_profile_by_diameter_km"}, indent=1))
    for b, d in depth.items():
        print(b, {k: (v.get("q10_q25_median_q75_q90_m_per_km", [None] * 5)[2], v.get("share_deeper_than_40_m_per_km"),
                      v["n"]) for k, v in d.items()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
