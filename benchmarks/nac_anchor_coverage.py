"""Can a feature map of stride s propose NAC craters of 8-16 px? The best IoU between each
labelled crater and the anchors of Detectron2's anchor generator (the RPN's positive
threshold is IoU 0.7), by crater diameter, for stride 8 and 16 and two anchor sets; an
upsampled level (stride 16 on the image x2) is stride 8 with the anchors in image pixels.

    python benchmarks/nac_anchor_coverage.py ../shared/data/nac/train --out benchmarks/results/nac_anchor_coverage.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import detectron2_rfcn  # noqa: F401  (silences Detectron2's import-time warnings)
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, pairwise_iou

from detectron2_rfcn.nac_data import labelled_images, read_nac_boxes

ANCHOR_SETS = {"base [8..256] x2": [8, 16, 32, 64, 128, 256], "nac [8..32] x sqrt2, then x2": [8, 11, 16, 23, 32, 64, 128, 256]}
BINS_PX = [(8, 12), (12, 16), (16, 32), (32, 1e9)]


def best_iou(boxes_xyxy: np.ndarray, size_px: int, stride: int, sizes) -> np.ndarray:
    """Best anchor IoU of each box (in chunks: the anchors of a whole frame are many)."""
    gen = DefaultAnchorGenerator(sizes=[sizes], aspect_ratios=[[1.0]], strides=[stride], offset=0.0)
    feat = torch.zeros(1, 1, -(-size_px // stride), -(-size_px // stride))
    (anchors,) = gen([feat])
    out = []
    for chunk in np.array_split(boxes_xyxy, max(1, len(boxes_xyxy) // 100)):
        out.append(pairwise_iou(Boxes(torch.as_tensor(chunk, dtype=torch.float32)), anchors).max(dim=1).values.numpy())
    return np.concatenate(out)


def coverage_rows(boxes_xyxy, diam_px, size_px: int, anchor_sets: dict, bins_px, name_width: int,
                  cell_width: int) -> list[dict]:
    """Per stride (8, 16) and anchor set: the share of craters in each diameter bin whose best anchor
    has IoU >= 0.7 (>= 0.5); prints one table row each and returns them for the JSON."""
    rows = []
    for stride in (8, 16):
        for name, sizes in anchor_sets.items():
            iou = best_iou(boxes_xyxy, size_px, stride, sizes)
            row = {"stride": stride, "anchors": sizes, "bins": []}
            cells = []
            for lo, hi in bins_px:
                m = (diam_px >= lo) & (diam_px < hi)
                r7, r5 = float((iou[m] >= 0.7).mean()), float((iou[m] >= 0.5).mean())
                row["bins"].append({"diameter_px_min": lo, "diameter_px_max": hi, "n": int(m.sum()),
                                    "share_iou_ge_0.7": r7, "share_iou_ge_0.5": r5})
                cells.append(f"{100 * r7:{cell_width}.1f} ({100 * r5:5.1f})")
            rows.append(row)
            print(f"{stride:>6}  {name:<{name_width}}" + "".join(cells))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nac_dir")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    boxes = []
    for img in labelled_images(a.nac_dir):
        b = read_nac_boxes(img.with_suffix(".txt"))
        boxes.append(np.c_[b[:, :2], b[:, :2] + b[:, 2:]])
    boxes = np.concatenate(boxes)
    diam = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    keep = diam >= 8  # the labels' own limit
    boxes, diam = boxes[keep], diam[keep]
    res = {"num_craters": int(len(diam)), "rows": []}
    print(f"{len(diam)} labelled craters >= 8 px; share with an anchor of IoU >= 0.7 (>= 0.5) by diameter:")
    print(f"{'stride':>6}  {'anchors':<30}" + "".join(f"{f'{lo:g}-{hi:g} px' if hi < 1e9 else f'>= {lo:g} px':>18}" for lo, hi in BINS_PX))
    res["rows"] = coverage_rows(boxes, diam, 832, ANCHOR_SETS, BINS_PX, name_width=30, cell_width=9)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
