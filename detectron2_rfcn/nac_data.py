"""LRO NAC images with hand-labelled crater boxes (CraterDANet set) as a tile dataset.

The transfer-learning target: real 0.5 m/px images, one band (DOM only, no DEM), labels
``ID,X,Y,W,H,C_X,CY`` in pixels (delimiters may mix tabs and commas; craters under 8 px
unlabelled). Written by the one tile-dataset writer (``etl.tile_dataset``, float32 tiles in
[0, 1]), so registration, mapper, evaluator and train_net work unchanged. The frames are
not georeferenced: the dataset's CRS is null, with a note saying so, and each tile's
transform maps to its frame's pixels. Splits are by image: each NAC frame is a different place.

    python -m detectron2_rfcn.nac_data NAC_DIR OUT --val 1 --test 3              # train on the other 8
    python -m detectron2_rfcn.nac_data NAC_DIR OUT --folds 4 --fold 0            # cross-validation
"""
from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from etl.tile_dataset import TileDatasetWriter
from etl.tiling import tile_windows

__all__ = ["read_nac_boxes", "labelled_images", "nac_splits", "convert_nac_to_tile_dataset"]

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


def nac_splits(images: Sequence[Path], *, n_val: int = 1, n_test: int = 3, folds: int = 0,
               fold: int = 0) -> dict[str, list[Path]]:
    """Images (sorted by name) per split, whole images only: each NAC frame is a different place.

    Without ``folds``: the last ``n_test`` images are the test split, the ``n_val`` before them
    validation, every other labelled image trains. With ``folds`` (cross-validation): the images
    are cut into ``folds`` consecutive groups; group ``fold`` is the test split, the first ``n_val``
    images of the next group validate, the rest train."""
    images = sorted(images)
    if folds:
        if not 0 <= fold < folds or folds > len(images):
            raise ValueError(f"fold {fold} of {folds} with {len(images)} images")
        groups = [list(g) for g in np.array_split(np.arange(len(images)), folds)]
        test = groups[fold]
        val = groups[(fold + 1) % folds][:n_val] if folds > 1 else []
    else:
        if n_val + n_test >= len(images):
            raise ValueError(f"{len(images)} labelled images: {n_val} for validation and {n_test} for test "
                             "leave none to train on")
        test = list(range(len(images) - n_test, len(images)))
        val = list(range(len(images) - n_test - n_val, len(images) - n_test))
    held = set(test) | set(val)
    return {"train": [images[i] for i in range(len(images)) if i not in held],
            "val": [images[i] for i in val], "test": [images[i] for i in test]}


def _annotations(boxes: np.ndarray, col: int, row: int, width: int, height: int) -> list[dict]:
    """The label boxes (XYWH, frame px) that fall in a window, in window px; boxes cut by the
    window's edge are clipped and marked truncated."""
    x0, y0 = boxes[:, 0] - col, boxes[:, 1] - row
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    inside = (x1 > 0) & (y1 > 0) & (x0 < width) & (y0 < height)
    return [{
        "box_xyxy": np.clip([bx0, by0, bx1, by1], 0.0, [width, height, width, height]),
        "truncated": bool(bx0 < 0 or by0 < 0 or bx1 > width or by1 > height),
        "diameter_px": float((bx1 - bx0 + by1 - by0) / 2),
    } for bx0, by0, bx1, by1 in zip(x0[inside], y0[inside], x1[inside], y1[inside])]


def labelled_images(nac_dir) -> list[Path]:
    """The PNG frames of ``nac_dir`` that have a label file beside them, sorted by name."""
    return sorted(p for p in Path(nac_dir).glob("*.png") if p.with_suffix(".txt").is_file())


def convert_nac_to_tile_dataset(nac_dir, out_dir, *, n_val: int = 1, n_test: int = 3, folds: int = 0,
                                fold: int = 0, tile_size_px: int = 256, overlap_px: int = 32) -> Path:
    """Every labelled frame of ``nac_dir`` into a tile dataset (splits: :func:`nac_splits`).

    Training frames are cut into ``tile_size_px`` tiles overlapping by ``overlap_px``, the last
    row and column flush with the frame's edge (``etl.tiling``'s grid), so every pixel and label
    is used. Validation and test frames are written whole, one tile each at native size, so that
    evaluation counts every crater once (no crater is split between tiles, none is counted twice
    in an overlap)."""
    nac_dir, out = Path(nac_dir), Path(out_dir)
    images = labelled_images(nac_dir)
    if not images:
        raise ValueError(f"{nac_dir}: no PNG frame with a label file (.txt) beside it")
    splits = nac_splits(images, n_val=n_val, n_test=n_test, folds=folds, fold=fold)
    with TileDatasetWriter(out, ["dom"], crs=None, crs_note=NAC_CRS_NOTE,
                           generator="detectron2_rfcn.nac_data") as writer:
        for split, paths in splits.items():
            for path in paths:
                with warnings.catch_warnings():  # a PNG frame has no georeference, which NAC_CRS_NOTE says
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(path) as src:
                        band = src.read(1).astype(np.float32) / 255.0
                boxes = read_nac_boxes(path.with_suffix(".txt"))
                h, w = band.shape
                windows = (tile_windows(w, h, tile_size_px, overlap_px, cover_edge=True) if split == "train"
                           else [(0, 0, w, h)])
                for col, row, tw, th in windows:
                    writer.add_tile(split, f"{path.stem}_c{col:04d}_r{row:04d}",
                                    band[None, row:row + th, col:col + tw], transform=from_origin(col, -row, 1, 1),
                                    region=path.stem, window=[col, row, tw, th],
                                    annotations=_annotations(boxes, col, row, tw, th))
        writer.finish(tile_size_px=tile_size_px, levels=[1],
                      source_mosaics={s: [p.name for p in ps] for s, ps in splits.items()},
                      parameters={"nac_dir": str(nac_dir), "n_val": n_val, "n_test": n_test, "folds": folds,
                                  "fold": fold, "tile_size_px": tile_size_px, "overlap_px": overlap_px})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="NAC images + box labels -> crater tile dataset (every labelled "
                                            "frame; whole frames per split)")
    p.add_argument("nac_dir")
    p.add_argument("out")
    p.add_argument("--val", type=int, default=1, help="frames for validation (threshold calibration)")
    p.add_argument("--test", type=int, default=3, help="frames held out for test (0: none); ignored with --folds")
    p.add_argument("--folds", type=int, default=0, help="cross-validation: number of groups of frames (0: off)")
    p.add_argument("--fold", type=int, default=0, help="which group is the test split (0 .. folds - 1)")
    p.add_argument("--tile-size", type=int, default=256, help="training tile side, px")
    p.add_argument("--overlap", type=int, default=32, help="training tile overlap, px")
    a = p.parse_args(argv)
    out = convert_nac_to_tile_dataset(a.nac_dir, a.out, n_val=a.val, n_test=a.test, folds=a.folds, fold=a.fold,
                                      tile_size_px=a.tile_size, overlap_px=a.overlap)
    info = json.loads((out / "dataset.json").read_text())
    print(f"wrote {out}: tiles {info['splits']}, craters {info['annotations']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
