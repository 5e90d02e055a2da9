"""Registration of tile datasets: the one reader of the format that ``etl.tile_dataset`` writes
(its module docstring is the contract: ``dataset.json``, ``tiles/<split>/<tile_id>.tif`` and
COCO ``train/val/test.json``), whoever cut them (``etl.tiling``, ``detectron2_rfcn.nac_data``).

Splits are spatially disjoint regions (so "test" is a held-out region, not held-out tiles).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from etl.tile_dataset import SPLITS, read_dataset_info

__all__ = ["CRATER_SPLITS", "load_crater_json", "register_crater_dataset", "read_dataset_info",
           "setup_crater_datasets"]

logger = logging.getLogger(__name__)

CRATER_SPLITS = SPLITS
# Crater attributes carried from the JSON into each annotation record (for the evaluator
# and the atlas); the model itself reads only bbox / category_id.
_CRATER_FIELDS = ("lon", "lat", "diameter_km", "diameter_px", "truncated", "crater_id", "age_class")


def load_crater_json(json_file, dataset_dir) -> list[dict]:
    """Detectron2 dataset dicts from one split's COCO-style JSON.

    ``category_id`` becomes the contiguous id 0 ("crater"); ``iscrowd`` and ``truncated``
    are kept so that the mapper and evaluator can apply their policies.
    """
    dataset_dir = Path(dataset_dir)
    coco = json.loads(Path(json_file).read_text())
    cat_ids = sorted(c["id"] for c in coco.get("categories", [{"id": 1}]))
    cat_to_contiguous = {cid: i for i, cid in enumerate(cat_ids)}
    anns_by_image: dict[int, list] = {}
    for ann in coco.get("annotations", []):
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in coco["images"]:
        record = {
            "file_name": str(dataset_dir / img["file_name"]),
            "image_id": img["id"],
            "height": int(img["height"]),
            "width": int(img["width"]),
        }
        for key in ("level", "region", "window", "crs", "pixel_size_m", "lon0", "lat0", "dem_relief_m",
                    "sun_elevation_deg", "ignore_below_px"):
            if key in img:
                record[key] = img[key]
        objs = []
        for ann in anns_by_image.get(img["id"], []):
            obj = {
                "bbox": [float(v) for v in ann["bbox"]],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": cat_to_contiguous[ann.get("category_id", cat_ids[0])],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            obj.update({k: ann[k] for k in _CRATER_FIELDS if k in ann})
            obj["truncated"] = bool(obj.get("truncated", False))
            objs.append(obj)
        record["annotations"] = objs
        records.append(record)
    logger.info("Loaded %d tiles with %d craters from %s", len(records),
                sum(len(r["annotations"]) for r in records), json_file)
    return records


def register_crater_dataset(name_prefix: str, dataset_dir) -> list[str]:
    """Register ``<prefix>_train/_val/_test`` (the splits whose JSON exists) in Detectron2's
    catalogs, with metadata thing_classes ["crater"], evaluator_type "crater", channels and
    pixel statistics. Re-registering the same name (same directory) is a no-op."""
    dataset_dir = Path(dataset_dir).resolve()
    info = read_dataset_info(dataset_dir)
    names = []
    for split in CRATER_SPLITS:
        json_file = dataset_dir / f"{split}.json"
        if not json_file.is_file():
            continue
        name = f"{name_prefix}_{split}"
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("dataset_dir", None) != str(dataset_dir):
                raise ValueError(f"dataset {name!r} is already registered for another directory "
                                 f"({MetadataCatalog.get(name).get('dataset_dir', None)})")
            names.append(name)
            continue
        DatasetCatalog.register(name, lambda j=json_file, d=dataset_dir: load_crater_json(j, d))
        MetadataCatalog.get(name).set(
            thing_classes=["crater"],
            evaluator_type="crater",
            dataset_dir=str(dataset_dir),
            json_file=str(json_file),
            channels=list(info.get("channels", [])),
            pixel_mean=list(info.get("pixel_mean", [])),
            pixel_std=list(info.get("pixel_std", [])),
            split=split,
        )
        names.append(name)
    if not names:
        raise FileNotFoundError(f"{dataset_dir}: no train/val/test.json")
    return names


def setup_crater_datasets(cfg) -> list[str]:
    """Register ``cfg.DATASETS.CRATER.DIR`` (if set) and, when asked, copy its pixel statistics
    and channel names into ``cfg.MODEL`` (cfg must not be frozen)."""
    if not cfg.DATASETS.CRATER.DIR:
        return []
    names = register_crater_dataset(cfg.DATASETS.CRATER.NAME_PREFIX, cfg.DATASETS.CRATER.DIR)
    if cfg.DATASETS.CRATER.PIXEL_STATS_FROM_DATASET:
        info = read_dataset_info(cfg.DATASETS.CRATER.DIR)
        cfg.MODEL.PIXEL_MEAN = [float(v) for v in info["pixel_mean"]]
        # A constant channel has std 0: keep it finite.
        cfg.MODEL.PIXEL_STD = [max(float(v), 1e-6) for v in info["pixel_std"]]
        if info.get("channels"):
            cfg.MODEL.RFCN.INPUT_CHANNELS = list(info["channels"])
    return names
