"""Craters of plain images (LRO NAC frames and other PNGs without a georeference): boxes and
scores at the image's native size.

A large image is cut into overlapping tiles on ``etl.tiling``'s grid (the last row and column
flush with the image's edge, so every pixel is seen at native resolution: nothing is resized).
A box that touches an inner tile edge is a partial view of a crater that an overlapping tile
holds whole, and is dropped; boxes at the image's own edge are kept. The views of one crater
in overlapping tiles are merged by class-agnostic NMS. Nothing caps the detections below the
number of craters a tile can hold: ``uncapped_config`` lifts the model's per-image limits to one
detection per 8 x 8 px (the smallest labelled crater) of a tile.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision.ops import nms

from etl.tiling import tile_windows

__all__ = ["SMALLEST_CRATER_PX", "detect_image", "read_plain_image", "uncapped_config", "write_detections"]

#: Side of the smallest crater a plain image's labels hold (NAC: craters under 8 px are not
#: labelled); a tile cannot hold more craters than (tile side / this)^2.
SMALLEST_CRATER_PX = 8


def read_plain_image(path) -> np.ndarray:
    """A PNG/JPEG/TIFF frame as one float32 DOM channel (1, H, W) in [0, 1] (8-bit / 255, 16-bit
    / 65535; colour images are converted to luminance): the scaling of ``nac_data``'s tiles."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            band = np.asarray(img, dtype=np.float32) / 65535.0
        else:
            band = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return band[None]


def uncapped_config(cfg, tile_size_px: int):
    """``cfg`` (cloned) with RPN proposals and detections per image at least one per
    ``SMALLEST_CRATER_PX``^2 of a tile, so a crater-dense tile is never cut off."""
    most = (tile_size_px // SMALLEST_CRATER_PX) ** 2
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.DETECTIONS_PER_IMAGE = max(cfg.TEST.DETECTIONS_PER_IMAGE, most)
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = max(cfg.MODEL.RPN.POST_NMS_TOPK_TEST, most)
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = max(cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, 4 * most)
    return cfg


def detect_image(predictor: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], image: np.ndarray, *,
                 tile_size_px: int = 512, overlap_px: int = 64, score_threshold: float = 0.0,
                 nms_iou: float = 0.5, edge_margin_px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) XYXY in image pixels and scores (N,), best first, of one (C, H, W) image.

    ``predictor(channels) -> (boxes_xyxy_px, scores)`` sees one tile at a time (usually a
    ``detectron2_rfcn.atlas.CraterPredictor``). Craters larger than ``overlap_px`` may touch an
    inner edge of every tile that holds them, so such boxes are kept where they touch one (the
    NMS then keeps the best view)."""
    if overlap_px >= tile_size_px:
        raise ValueError(f"overlap_px ({overlap_px}) must be smaller than tile_size_px ({tile_size_px})")
    _, height, width = image.shape
    boxes_all, scores_all = [], []
    m = edge_margin_px
    for col, row, w, h in tile_windows(width, height, tile_size_px, overlap_px, cover_edge=True):
        boxes, scores = predictor(np.ascontiguousarray(image[:, row:row + h, col:col + w]))
        boxes, scores = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, dtype=float)
        x0, y0, x1, y1 = boxes.T
        # An edge of the tile that is not the image's edge cuts craters: their boxes are partial.
        cut = (((x0 < m) & (col > 0)) | ((y0 < m) & (row > 0))
               | ((x1 > w - m) & (col + w < width)) | ((y1 > h - m) & (row + h < height)))
        too_big_to_fit = np.maximum(x1 - x0, y1 - y0) > overlap_px
        keep = (scores >= score_threshold) & (~cut | too_big_to_fit)
        boxes_all.append(boxes[keep] + [col, row, col, row])
        scores_all.append(scores[keep])
    boxes = np.concatenate(boxes_all) if boxes_all else np.zeros((0, 4))
    scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
    if len(boxes):
        keep = nms(torch.as_tensor(boxes), torch.as_tensor(scores), nms_iou).numpy()
        boxes, scores = boxes[keep], scores[keep]
    return boxes, scores


def write_detections(results: list[tuple[Path, np.ndarray, np.ndarray, tuple[int, int]]], out_dir) -> list[Path]:
    """Per image ``OUT/<stem>.csv`` (x0_px, y0_px, x1_px, y1_px, score, x_px, y_px, diameter_px) and
    one COCO results file ``OUT/coco_results.json`` (image_id = position in ``results``, bbox
    [x, y, w, h] px, score, category_id 1, plus file_name, width and height). Returns the paths."""
    import json

    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, coco = [], []
    for image_id, (path, boxes, scores, (height, width)) in enumerate(results):
        df = pd.DataFrame(boxes, columns=["x0_px", "y0_px", "x1_px", "y1_px"])
        df["score"] = scores
        df["x_px"] = (df.x0_px + df.x1_px) / 2
        df["y_px"] = (df.y0_px + df.y1_px) / 2
        # Mean of width and height, as the evaluator measures a box's diameter.
        df["diameter_px"] = ((df.x1_px - df.x0_px) + (df.y1_px - df.y0_px)) / 2
        csv = out / f"{Path(path).stem}.csv"
        px = ["x0_px", "y0_px", "x1_px", "y1_px", "x_px", "y_px", "diameter_px"]
        df.round({**{c: 2 for c in px}, "score": 4}).to_csv(csv, index=False)
        written.append(csv)
        coco += [{"image_id": image_id, "category_id": 1, "file_name": Path(path).name, "width": int(width),
                  "height": int(height), "bbox": [round(float(b[0]), 2), round(float(b[1]), 2),
                                                  round(float(b[2] - b[0]), 2), round(float(b[3] - b[1]), 2)],
                  "score": round(float(s), 4)} for b, s in zip(boxes, scores)]
    coco_path = out / "coco_results.json"
    coco_path.write_text(json.dumps(coco) + "\n")
    written.append(coco_path)
    return written
