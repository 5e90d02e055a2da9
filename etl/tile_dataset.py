"""The tile dataset: the one on-disk format of every detector dataset, and its one writer.

``etl.tiling`` (DOM + DEM mosaics), ``detectron2_rfcn.nac_data`` (LRO NAC frames) and the
tests' toy datasets all write through :class:`TileDatasetWriter`; ``detectron2_rfcn.data``
reads the result (``dataset.json`` through :func:`read_dataset_info`). The contract::

    OUT/
      dataset.json   contract ("deepcraters.tiles"), version
                     channels              band names, in band order
                     pixel_mean, pixel_std per channel, over the valid pixels of the train tiles
                     crs                   WKT of the tiles' CRS, or null when the source is not
                                           georeferenced (NAC frames); crs_note then says why
                     tile_size_px, levels  tile side and pyramid downsample factors
                     splits, annotations   tiles and craters per split
                     source_mosaics        what the tiles were cut from
                     created_by            generator, code_version, parameters
                     (writers add their own keys, e.g. etl.tiling's regions and level0)
      tiles/<split>/<tile_id>.tif   float32 GeoTIFF, bands in ``channels`` order, band
                     descriptions = channel names; its own CRS + transform when georeferenced,
                     otherwise a transform to the source image's pixels (x = column, y = -row)
      train.json, val.json, test.json   COCO, one category {id 1, "crater"}
                     images: id, file_name, height, width, tile_id, level, region, and window
                             [col, row, width, height] in level-0 pixels of the source; tiles
                             in their own projection (etl.local_tiles) add crs (PROJ string),
                             pixel_size_m, lon0/lat0 (centre), dem_relief_m, and
                             ignore_below_px (catalogue incomplete below it: unlabelled, not
                             background)
                     annotations: id, image_id, category_id, bbox [x, y, w, h] in tile pixels,
                             area, iscrowd 0, diameter_px, truncated (the tile edge cuts the
                             crater, the box is clipped); when known lon, lat (degrees),
                             diameter_km and crater_id; age_class as a code (pNc, Nc, Ic, Ec,
                             Cc: ``etl.age_classes``), never an integer

Nothing is written at ``OUT`` until the dataset is complete: tiles go to a hidden sibling
folder that is renamed to ``OUT`` at the end and removed on any failure, so an error never
leaves a partial or empty dataset behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from etl.age_classes import AgeClass

__all__ = ["CATEGORY", "CONTRACT", "CONTRACT_VERSION", "SPLITS", "TileDatasetWriter", "age_code",
           "read_dataset_info"]

CONTRACT = "deepcraters.tiles"
CONTRACT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
CATEGORY = {"id": 1, "name": "crater"}
# Annotation keys a writer may pass through, beyond the box (see the contract above).
_CRATER_KEYS = ("lon", "lat", "diameter_km", "crater_id", "age_class")


def age_code(value) -> str:
    """The file encoding of an age class (its code) from an index, a code or a name."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return AgeClass(int(value)).code
    return AgeClass.parse(value).code


def read_dataset_info(dataset_dir) -> dict:
    """The dataset's ``dataset.json`` (channels, pixel statistics, CRS, ...), checked against the
    contract: a tile dataset of a version this code reads, with one mean and std per channel."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a crater tile dataset (no dataset.json)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    contract, version = info.get("contract", CONTRACT), info.get("version", CONTRACT_VERSION)
    if contract != CONTRACT or not isinstance(version, int) or version > CONTRACT_VERSION:
        raise ValueError(f"{path}: contract {contract!r} version {version!r}; this code reads {CONTRACT!r} "
                         f"up to version {CONTRACT_VERSION}")
    channels = info.get("channels")
    if not channels or any(len(info.get(k) or []) != len(channels) for k in ("pixel_mean", "pixel_std")):
        raise ValueError(f"{path}: needs channels and one pixel_mean and pixel_std entry per channel, got "
                         f"channels={channels!r}, pixel_mean={info.get('pixel_mean')!r}, "
                         f"pixel_std={info.get('pixel_std')!r}")
    return info


def _plain(value):
    """numpy scalars -> plain Python for json."""
    return value.item() if isinstance(value, np.generic) else value


class TileDatasetWriter:
    """Write a tile dataset (module docstring) into ``out_dir``, atomically.

    Use as a context manager: ``add_tile`` for every tile, then ``finish``; leaving the
    block by an exception removes everything written. ``out_dir`` must be new, empty, or a
    previous tile dataset (which is replaced only once the new one is complete).
    ``crs`` is the tiles' CRS (anything rasterio reads) or None with ``crs_note`` saying why.
    """

    def __init__(self, out_dir, channels: Sequence[str], *, crs, crs_note: str | None = None,
                 generator: str):
        self.out = Path(out_dir)
        self.channels = [str(c) for c in channels]
        if crs is None and not crs_note:
            raise ValueError("a tile dataset without a CRS needs crs_note saying why")
        if crs is not None:
            from etl.geometry import to_rasterio_crs

            crs = to_rasterio_crs(crs)
        self.crs, self.crs_note, self.generator = crs, crs_note, generator
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"{self.out}: exists and is not a directory")
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / "dataset.json").is_file():
            raise FileExistsError(f"{self.out}: exists and is not a tile dataset (no dataset.json); "
                                  "give a new or empty directory")
        # Folders this writer creates above OUT, removed again on failure.
        self._made_parents = [p for p in reversed(self.out.parents) if not p.exists()]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial",
                                                       dir=self.out.parent))
        for split in SPLITS:
            (self._tmp / "tiles" / split).mkdir(parents=True)
        self._coco = {s: {"images": [], "annotations": [], "categories": [dict(CATEGORY)]} for s in SPLITS}
        self._sums = np.zeros((3, len(self.channels)))  # count, sum, sum of squares per channel (train)
        self._image_id = self._ann_id = 0

    def __enter__(self) -> "TileDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp is not None:
            self.abort()

    @property
    def n_tiles(self) -> int:
        """Tiles added so far, all splits."""
        return sum(len(self._coco[s]["images"]) for s in SPLITS)

    def abort(self) -> None:
        """Remove everything written so far (the target is left as it was)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        for parent in reversed(self._made_parents):
            try:
                parent.rmdir()
            except OSError:  # not empty (someone else wrote there) or already gone
                break
        self._made_parents = []

    def add_tile(self, split: str, tile_id: str, pixels: np.ndarray, *, transform, level: int = 1,
                 region, window: Sequence[int], annotations: Sequence[dict] = (),
                 valid: np.ndarray | None = None, crs=None, image_extra: dict | None = None) -> int:
        """Write one tile and its labels; returns its image id.

        ``pixels`` float32 (C, H, W) in ``channels`` order; ``valid`` (H, W) marks the pixels
        that count towards the train statistics (all by default). Each annotation has
        ``box_xyxy`` (tile pixels), ``truncated`` and ``diameter_px``, plus any of
        lon, lat, diameter_km, crater_id, age_class. ``crs`` gives this tile its own CRS (tiles
        in a projection centred on each, ``etl.local_tiles``), else the dataset's is used;
        ``image_extra`` adds keys to the tile's image record (e.g. its ``crs``, ``pixel_size_m``,
        ``ignore_below_px``).
        """
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        if self._tmp is None:
            raise RuntimeError("this tile dataset was already finished or aborted")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 3 or pixels.shape[0] != len(self.channels):
            raise ValueError(f"tile {tile_id}: pixels of shape {pixels.shape}, expected "
                             f"({len(self.channels)}, H, W) for channels {self.channels}")
        _, height, width = pixels.shape
        rel = f"tiles/{split}/{tile_id}.tif"
        with warnings.catch_warnings():
            tile_crs = self.crs
            if crs is not None:
                from etl.geometry import to_rasterio_crs

                tile_crs = to_rasterio_crs(crs)
            if tile_crs is None:  # known and said in dataset.json: the warning would only repeat it
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self._tmp / rel, "w", driver="GTiff", width=width, height=height,
                               count=len(self.channels), dtype="float32", crs=tile_crs, transform=transform,
                               compress="deflate", predictor=3) as ds:
                ds.write(pixels)
                ds.descriptions = tuple(self.channels)
        if split == "train":
            px = pixels[:, np.ones((height, width), bool) if valid is None else valid].astype(np.float64)
            self._sums += [[px.shape[1]] * len(self.channels), px.sum(axis=1), (px * px).sum(axis=1)]
        self._image_id += 1
        coco = self._coco[split]
        coco["images"].append({"id": self._image_id, "file_name": rel, "height": int(height), "width": int(width),
                               "tile_id": tile_id, "level": int(level), "region": _plain(region),
                               "window": [int(v) for v in window],
                               **{k: _plain(v) for k, v in (image_extra or {}).items()}})
        for ann in annotations:
            x0, y0, x1, y1 = (float(v) for v in ann["box_xyxy"])
            if not (0 <= x0 < x1 <= width + 1e-6 and 0 <= y0 < y1 <= height + 1e-6):
                raise ValueError(f"tile {tile_id}: box {ann['box_xyxy']} is not inside the {width} x {height} tile")
            self._ann_id += 1
            out = {"id": self._ann_id, "image_id": self._image_id, "category_id": CATEGORY["id"],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                   "diameter_px": float(ann["diameter_px"]), "truncated": bool(ann["truncated"])}
            for key in _CRATER_KEYS:
                if key in ann:
                    out[key] = age_code(ann[key]) if key == "age_class" else _plain(ann[key])
            coco["annotations"].append(out)
        return self._image_id

    def finish(self, *, tile_size_px: int, levels: Sequence[int], source_mosaics, parameters: dict,
               extra: dict | None = None) -> dict:
        """Write the COCO files and ``dataset.json``, move the dataset to ``out_dir``; returns
        the ``dataset.json`` content."""
        from etl.provenance import code_version

        if self._tmp is None:
            raise RuntimeError("this tile dataset was already finished or aborted")
        count, total, total_sq = self._sums
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
            std = np.sqrt(np.maximum(np.where(count > 0, total_sq / np.maximum(count, 1), 0.0) - mean ** 2, 0.0))
        for split in SPLITS:
            (self._tmp / f"{split}.json").write_text(json.dumps(self._coco[split]) + "\n")
        meta = {
            "contract": CONTRACT, "version": CONTRACT_VERSION,
            "channels": list(self.channels),
            "pixel_mean": [float(v) for v in mean],
            "pixel_std": [float(v) for v in std],
            "crs": None if self.crs is None else self.crs.to_wkt(),
            **({"crs_note": self.crs_note} if self.crs is None else {}),
            "tile_size_px": int(tile_size_px),
            "levels": [int(v) for v in levels],
            "splits": {s: len(self._coco[s]["images"]) for s in SPLITS},
            "annotations": {s: len(self._coco[s]["annotations"]) for s in SPLITS},
            "source_mosaics": source_mosaics,
            **(extra or {}),
            "created_by": {"generator": self.generator, "code_version": code_version(), "parameters": parameters},
        }
        (self._tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        old = None
        if self.out.exists():
            # A previous dataset or an empty folder: swap it out only now that the new one is whole.
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            self.out.rename(old / "dataset")
        self._tmp.rename(self.out)
        self._tmp, self._made_parents = None, []
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return meta
