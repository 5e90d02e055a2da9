"""LRO NAC images with hand-labelled crater boxes (CraterDANet set) as a tile dataset.

The transfer-learning target: real 0.5 m/px images, one band (DOM only, no DEM), labels
``ID,X,Y,W,H,C_X,CY`` in pixels (delimiters may mix tabs and commas; craters under 8 px
unlabelled). Written in the same layout as ``etl.tiling`` (``dataset.json``, float32 tiles
in [0, 1], COCO JSONs), so registration, mapper, evaluator and train_net work unchanged.
Splits are by image: each NAC frame is a different place.

    python -m detectron2_rfcn.nac_data NAC_DIR OUT --train 3 --val 1 --test 4 --tile-size 256
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import rasterio
from rasterio.transform import from_origin

__all__ = ["read_nac_boxes", "convert_nac_to_tile_dataset"]


def read_nac_boxes(txt_path) -> np.ndarray:
    """(N, 4) XYWH boxes, px, from one label file (header line skipped)."""
    rows = []
    for line_no, line in enumerate(Path(txt_path).read_text().splitlines(), start=1):
        parts = [p for p in re.split(r"[,\t ]+", line.strip()) if p]
        if not parts or not re.match(r"^-?\d", parts[0]):
            continue  # header or blank
        if len(parts) < 5:
            raise ValueError(f"{txt_path}:{line_no}: expected ID,X,Y,W,H,..., got {line!r}")
        rows.append([float(v) for v in parts[1:5]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def convert_nac_to_tile_dataset(nac_dir, out_dir, *, n_train: int = 3, n_val: int = 1, n_test: int = 4,
                                tile_size_px: int = 256) -> Path:
    """Cut the first n_train + n_val + n_test images (sorted by name) into non-overlapping tiles."""
    nac_dir, out = Path(nac_dir), Path(out_dir)
    images = sorted(nac_dir.glob("*.png"))
    needed = n_train + n_val + n_test
    if len(images) < needed:
        raise ValueError(f"{nac_dir}: {len(images)} images, {needed} asked for")
    splits = {"train": images[:n_train], "val": images[n_train:n_train + n_val],
              "test": images[n_train + n_val:needed]}
    train_pixels: List[np.ndarray] = []
    counts: Dict[str, int] = {}
    for split, paths in splits.items():
        (out / "tiles" / split).mkdir(parents=True, exist_ok=True)
        coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "crater"}]}
        for path in paths:
            with rasterio.open(path) as src:
                band = src.read(1).astype(np.float32) / 255.0
            boxes = read_nac_boxes(path.with_suffix(".txt"))
            h, w = band.shape
            for row in range(0, h - tile_size_px + 1, tile_size_px):
                for col in range(0, w - tile_size_px + 1, tile_size_px):
                    tile = band[row:row + tile_size_px, col:col + tile_size_px]
                    tile_id = f"{path.stem}_c{col:04d}_r{row:04d}"
                    rel = f"tiles/{split}/{tile_id}.tif"
                    with rasterio.open(out / rel, "w", driver="GTiff", height=tile_size_px, width=tile_size_px,
                                       count=1, dtype="float32", transform=from_origin(col, -row, 1, 1)) as dst:
                        dst.write(tile[None])
                    if split == "train":
                        train_pixels.append(tile.ravel())
                    image_id = len(coco["images"]) + 1
                    coco["images"].append({"id": image_id, "file_name": rel, "height": tile_size_px,
                                           "width": tile_size_px, "level": 1, "region": path.stem,
                                           "window": [col, row, tile_size_px, tile_size_px]})
                    x0, y0 = boxes[:, 0] - col, boxes[:, 1] - row
                    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
                    inside = (x1 > 0) & (y1 > 0) & (x0 < tile_size_px) & (y0 < tile_size_px)
                    for bx0, by0, bx1, by1 in zip(x0[inside], y0[inside], x1[inside], y1[inside]):
                        truncated = bool(bx0 < 0 or by0 < 0 or bx1 > tile_size_px or by1 > tile_size_px)
                        cx0, cy0 = max(bx0, 0.0), max(by0, 0.0)
                        cx1, cy1 = min(bx1, tile_size_px), min(by1, tile_size_px)
                        coco["annotations"].append({
                            "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                            "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0], "area": (cx1 - cx0) * (cy1 - cy0),
                            "iscrowd": 0, "diameter_px": float((bx1 - bx0 + by1 - by0) / 2),
                            "truncated": truncated})
        (out / f"{split}.json").write_text(json.dumps(coco))
        counts[split] = len(coco["images"])
    pixels = np.concatenate(train_pixels)
    (out / "dataset.json").write_text(json.dumps({
        "channels": ["dom"], "pixel_mean": [float(pixels.mean())], "pixel_std": [float(pixels.std())],
        "crs": "", "source_mosaics": {s: [p.name for p in ps] for s, ps in splits.items()}, "levels": [1],
        "tile_size_px": tile_size_px, "splits": counts}))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="NAC images + box labels -> crater tile dataset")
    p.add_argument("nac_dir")
    p.add_argument("out")
    p.add_argument("--train", type=int, default=3)
    p.add_argument("--val", type=int, default=1)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--tile-size", type=int, default=256)
    a = p.parse_args(argv)
    out = convert_nac_to_tile_dataset(a.nac_dir, a.out, n_train=a.train, n_val=a.val, n_test=a.test,
                                      tile_size_px=a.tile_size)
    print(f"wrote {out}: {json.loads((out / 'dataset.json').read_text())['splits']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
