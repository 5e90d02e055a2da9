"""Tile dataset registration and the multi-channel mapper (reading, flips, quarter turns)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2_rfcn import (CraterDatasetMapper, Rot90Transform, get_rfcn_cfg, read_tile, register_crater_dataset,
                             setup_crater_datasets)
from toy_tiles import write_toy_crater_dataset

from pathlib import Path

QUICK = str(Path(__file__).resolve().parents[1] / "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml")


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy_crater_dataset(tmp_path_factory.mktemp("toy"), tiles_per_split={"train": 4, "val": 1, "test": 1})


def test_register_and_load(toy_dir):
    names = register_crater_dataset("toyreg", toy_dir)
    assert names == ["toyreg_train", "toyreg_val", "toyreg_test"]
    # Registering the same directory again is harmless; another directory under the name is not.
    assert register_crater_dataset("toyreg", toy_dir) == names
    dicts = DatasetCatalog.get("toyreg_train")
    coco = json.loads((toy_dir / "train.json").read_text())
    assert len(dicts) == len(coco["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(coco["annotations"])
    a = dicts[0]["annotations"][0]
    assert a["category_id"] == 0 and a["bbox_mode"] == BoxMode.XYWH_ABS and "truncated" in a
    assert Path(dicts[0]["file_name"]).is_file()
    meta = MetadataCatalog.get("toyreg_test")
    assert meta.thing_classes == ["crater"] and meta.evaluator_type == "crater"
    assert meta.channels == ["dom", "dem", "slope"] and len(meta.pixel_mean) == 3


def test_pixel_stats_from_dataset(toy_dir):
    cfg = get_rfcn_cfg(QUICK, ["DATASETS.CRATER.DIR", str(toy_dir), "DATASETS.CRATER.NAME_PREFIX", "toystats",
                               "DATASETS.CRATER.PIXEL_STATS_FROM_DATASET", "True"])
    setup_crater_datasets(cfg)
    info = json.loads((toy_dir / "dataset.json").read_text())
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx(info["pixel_mean"])
    assert cfg.MODEL.PIXEL_STD == pytest.approx(info["pixel_std"])


def _write_tile(path, data, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype="float32", transform=from_origin(0, 0, 1, 1), nodata=nodata) as dst:
        dst.write(data.astype(np.float32))


def test_read_tile_keeps_floats_and_fills_nodata(tmp_path):
    data = np.random.default_rng(0).random((5, 7, 9)).astype(np.float32) * 0.01  # would vanish in uint8
    data[2, 3, 4] = np.nan
    _write_tile(tmp_path / "t.tif", data)
    img = read_tile(tmp_path / "t.tif", 5, fill_values=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert img.dtype == np.float32 and img.shape == (5, 7, 9)
    assert img[2, 3, 4] == pytest.approx(0.3)
    mask = np.ones_like(data, bool)
    mask[2, 3, 4] = False
    assert np.array_equal(img[mask], data[mask])
    with pytest.raises(ValueError, match="bands"):
        read_tile(tmp_path / "t.tif", 3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_moves_boxes_with_pixels(k):
    h, w = 20, 30
    img = np.zeros((h, w, 2), np.float32)
    img[2:6, 10:17] = 1.0  # a block: box x 10..17, y 2..6
    t = Rot90Transform(k, h, w)
    out = t.apply_image(img)
    ys, xs = np.nonzero(out[..., 0])
    expected = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float64)
    assert np.allclose(t.apply_box(np.array([[10.0, 2.0, 17.0, 6.0]])), expected)
    back = t.inverse().apply_image(out)
    assert np.array_equal(back, img)


def test_mapper_train_and_test(toy_dir):
    register_crater_dataset("toymap", toy_dir)
    d = next(x for x in DatasetCatalog.get("toymap_train") if x["annotations"])
    cfg = get_rfcn_cfg(QUICK)
    raw = read_tile(d["file_name"])
    # No augmentation: the exact float tile and the catalogue boxes.
    cfg.INPUT.CRATER.HFLIP_PROB, cfg.INPUT.CRATER.VFLIP_PROB, cfg.INPUT.CRATER.ROT90 = 0.0, 0.0, False
    out = CraterDatasetMapper(cfg, True)(d)
    assert out["image"].dtype == torch.float32 and torch.equal(out["image"], torch.from_numpy(raw))
    boxes = np.array([BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in d["annotations"]])
    assert np.allclose(out["instances"].gt_boxes.tensor.numpy(), boxes, atol=1e-4)
    # Horizontal flip always: image mirrored, boxes mirrored.
    cfg.INPUT.CRATER.HFLIP_PROB = 1.0
    out = CraterDatasetMapper(cfg, True)(d)
    assert torch.equal(out["image"], torch.from_numpy(raw[:, :, ::-1].copy()))
    w = d["width"]
    assert np.allclose(out["instances"].gt_boxes.tensor.numpy()[:, [2, 0]], w - boxes[:, [0, 2]], atol=1e-4)
    # Test mode: no annotations (evaluators read the catalogue), no augmentation.
    out = CraterDatasetMapper(cfg, False)(d)
    assert "instances" not in out and "annotations" not in out
    assert torch.equal(out["image"], torch.from_numpy(raw))


def test_truncated_policy(toy_dir):
    register_crater_dataset("toytrunc", toy_dir)
    dicts = DatasetCatalog.get("toytrunc_train")
    d = next(x for x in dicts if any(a["truncated"] for a in x["annotations"]))
    n_all = len(d["annotations"])
    n_trunc = sum(a["truncated"] for a in d["annotations"])
    cfg = get_rfcn_cfg(QUICK, ["INPUT.CRATER.HFLIP_PROB", "0.0", "INPUT.CRATER.VFLIP_PROB", "0.0",
                               "INPUT.CRATER.ROT90", "False"])
    assert len(CraterDatasetMapper(cfg, True)(d)["instances"]) == n_all
    cfg.INPUT.CRATER.TRUNCATED = "drop"
    assert len(CraterDatasetMapper(cfg, True)(d)["instances"]) == n_all - n_trunc


def test_nac_labels_with_mixed_delimiters(tmp_path):
    from detectron2_rfcn.nac_data import read_nac_boxes
    (tmp_path / "a.txt").write_text("ID,X,Y,W,H,C_X,CY\n0,440,12,10,10,445,17\n1\t390.5\t13, 22,22,401,24\n\n")
    boxes = read_nac_boxes(tmp_path / "a.txt")
    assert boxes.tolist() == [[440.0, 12.0, 10.0, 10.0], [390.5, 13.0, 22.0, 22.0]]
    (tmp_path / "b.txt").write_text("ID,X,Y,W,H\n3,4\n")
    with pytest.raises(ValueError, match="b.txt:2"):
        read_nac_boxes(tmp_path / "b.txt")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # NAC frames have none
def test_nac_frames_become_a_tile_dataset_without_a_crs(tmp_path):
    from detectron2_rfcn.nac_data import NAC_CRS_NOTE, convert_nac_to_tile_dataset

    rng = np.random.default_rng(0)
    for k in range(3):
        with rasterio.open(tmp_path / f"f{k}.png", "w", driver="PNG", height=300, width=300, count=1,
                           dtype="uint8") as dst:
            dst.write(rng.integers(0, 256, (1, 300, 300), dtype=np.uint8))
        # One crater inside the first tile, one cut by the edge between the first two tiles.
        (tmp_path / f"f{k}.txt").write_text("ID,X,Y,W,H,C_X,CY\n0,10,10,20,20,20,20\n1,118,40,20,20,128,50\n")
    out = convert_nac_to_tile_dataset(tmp_path, tmp_path / "ds", n_val=1, n_test=1, tile_size_px=128, overlap_px=0)
    info = json.loads((out / "dataset.json").read_text())
    assert info["crs"] is None and info["crs_note"] == NAC_CRS_NOTE and info["channels"] == ["dom"]
    # Training frame: tiles at 0, 128 and 172 (flush with the edge) on each axis; val/test frames whole.
    assert info["splits"] == {"train": 9, "val": 1, "test": 1}
    coco = json.loads((out / "train.json").read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    assert [(a["bbox"], a["truncated"]) for a in first] == [([10.0, 10.0, 20.0, 20.0], False),
                                                            ([118.0, 40.0, 10.0, 20.0], True)]
    with rasterio.open(out / coco["images"][0]["file_name"]) as ds:
        assert ds.crs is None and ds.count == 1 and ds.read().max() <= 1.0
    assert register_crater_dataset("nacfake", out) == ["nacfake_train", "nacfake_val", "nacfake_test"]
