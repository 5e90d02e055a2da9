"""Can a feature map of stride s propose the craters of a tile dataset? The best IoU between each
labelled (whole) crater of a split and the anchors of Detectron2's anchor generator (the RPN's
positive threshold is IoU 0.7; 0.5 shown beside it), by crater diameter, for stride 8 and 16 and
two anchor sets (the NAC study's, benchmarks/nac_anchor_coverage.py, on any tile dataset).

    python benchmarks/tile_anchor_coverage.py LOLA_TILES --out benchmarks/results/lola_anchor_coverage.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nac_anchor_coverage import coverage_rows  # noqa: E402

ANCHOR_SETS = {"x2 from 8 (configs/LOLA/*C4*)": [8, 16, 32, 64, 128],
               "x sqrt2 from 8 (configs/LOLA/*DC4*)": [8, 11, 16, 23, 32, 45, 64, 90, 128]}
BINS_PX = [(8, 12), (12, 16), (16, 24), (24, 48), (48, 1e9)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tiles", type=Path, help="tile dataset (dataset.json, <split>.json)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    split = json.loads((a.tiles / f"{a.split}.json").read_text())
    size_px = max(max(im["width"], im["height"]) for im in split["images"])
    xywh = np.array([ann["bbox"] for ann in split["annotations"] if not ann.get("truncated")], dtype=float)
    boxes = np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]
    diam = (xywh[:, 2] + xywh[:, 3]) / 2
    res = {"tiles": a.tiles.name, "split": a.split, "num_craters": int(len(diam)),
           "diameter_px_percentiles_5_25_50_75_95": np.percentile(diam, [5, 25, 50, 75, 95]).round(1).tolist(),
           "rows": []}
    print(f"{len(diam)} whole craters in {a.split} (median {np.median(diam):.1f} px); share with an anchor of "
          "IoU >= 0.7 (>= 0.5) by diameter:")
    print(f"{'stride':>6}  {'anchors':<36}" + "".join(
        f"{f'{lo:g}-{hi:g} px' if hi < 1e9 else f'>= {lo:g} px':>16}" for lo, hi in BINS_PX))
    res["rows"] = coverage_rows(boxes, diam, size_px, ANCHOR_SETS, BINS_PX, name_width=36, cell_width=8)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
