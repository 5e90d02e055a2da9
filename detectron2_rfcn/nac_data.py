"""LRO NAC images with hand-labelled crater boxes (CraterDANet set) as a tile dataset.

The transfer-learning target: real 0.5 m/px images, one band (DOM only, no DEM), labels
``ID,X,Y,W,H,C_X,CY`` in pixels (delimiters may mix tabs and commas; craters under 8 px
unlabelled). Written by the one tile-dataset writer (``etl.tile_dataset``, float32 tiles in
[0, 1]), so registration, mapper, evaluator and train_net work unchanged. The frames are
not georeferenced: the dataset's CRS is null, with a note saying so, and each tile's
transform maps to its frame's pixels. Splits are by image: each NAC frame is a different place.

    python -m detectron2_rfcn.nac_data NAC_DIR OUT --train 3 --val 1 --test 4 --tile-size 256
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from etl.tile_dataset import TileDatasetWriter
from etl.tiling import tile_windows

__all__ = ["read_nac_boxes", "convert_nac_to_tile_dataset"]

#: Why a NAC tile dataset has no CRS (``dataset.json`` says so next to ``"crs": null``).
NAC_CRS_NOTE = ("LRO NAC frames (CraterDANet PNGs) carry no georeference; each tile's transform maps its "
                "pixels to those of its source frame (x = column, y = -row)")


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
    """Cut the first n_train + n_val + n_test images (sorted by name) into non-overlapping tiles
    (the remainder at the right and bottom edges is left out)."""
    nac_dir, out = Path(nac_dir), Path(out_dir)
    images = sorted(nac_dir.glob("*.png"))
    needed = n_train + n_val + n_test
    if len(images) < needed:
        raise ValueError(f"{nac_dir}: {len(images)} images, {needed} asked for")
    splits = {"train": images[:n_train], "val": images[n_train:n_train + n_val],
              "test": images[n_train + n_val:needed]}
    with TileDatasetWriter(out, ["dom"], crs=None, crs_note=NAC_CRS_NOTE,
                           generator="detectron2_rfcn.nac_data") as writer:
        for split, paths in splits.items():
            for path in paths:
                with rasterio.open(path) as src:
                    band = src.read(1).astype(np.float32) / 255.0
                boxes = read_nac_boxes(path.with_suffix(".txt"))
                h, w = band.shape
                for col, row, tw, th in tile_windows(w, h, tile_size_px, 0, cover_edge=False):
                    x0, y0 = boxes[:, 0] - col, boxes[:, 1] - row
                    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
                    inside = (x1 > 0) & (y1 > 0) & (x0 < tw) & (y0 < th)
                    annotations = [{
                        "box_xyxy": np.clip([bx0, by0, bx1, by1], 0.0, [tw, th, tw, th]),
                        "truncated": bool(bx0 < 0 or by0 < 0 or bx1 > tw or by1 > th),
                        "diameter_px": float((bx1 - bx0 + by1 - by0) / 2),
                    } for bx0, by0, bx1, by1 in zip(x0[inside], y0[inside], x1[inside], y1[inside])]
                    writer.add_tile(split, f"{path.stem}_c{col:04d}_r{row:04d}",
                                    band[None, row:row + th, col:col + tw], transform=from_origin(col, -row, 1, 1),
                                    region=path.stem, window=[col, row, tw, th], annotations=annotations)
        writer.finish(tile_size_px=tile_size_px, levels=[1],
                      source_mosaics={s: [p.name for p in ps] for s, ps in splits.items()},
                      parameters={"nac_dir": str(nac_dir), "n_train": n_train, "n_val": n_val, "n_test": n_test,
                                  "tile_size_px": tile_size_px})
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
