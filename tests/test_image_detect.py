"""Plain images (NAC PNGs): tiled detection at native size, the `detect` command, the NAC
dataset builder (every labelled frame, the edges kept) and training without a test split."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from detectron2_rfcn.image_detect import detect_image, read_plain_image, uncapped_config


def _replay_predictor(craters_xyxy: np.ndarray, width: int):
    """A predictor that sees what a perfect detector sees: every crater that overlaps the tile,
    clipped to it (a crater cut by the tile edge is a partial box). The tile's place is read
    from its pixels, which encode their own position (value = row * width + col)."""

    def predict(tile: np.ndarray):
        first = int(round(float(tile[0, 0, 0])))
        row, col = divmod(first, width)
        h, w = tile.shape[1:]
        b = craters_xyxy - [col, row, col, row]
        inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h)
        return np.clip(b[inside], 0, [w, h, w, h]), np.full(int(inside.sum()), 0.9)

    return predict


def test_tiled_detection_finds_every_crater_once_including_the_image_edges():
    height, width = 450, 600
    image = np.arange(height * width, dtype=np.float64).reshape(1, height, width)
    # Craters across tile seams (tile 256, overlap 64: seams at 192..256, 384..448, ...), at the
    # image's own edges and corners, and one in the last, flush tile.
    craters = np.array([[180, 100, 220, 140], [0, 0, 20, 20], [580, 430, 600, 450], [300, 0, 340, 30],
                        [590, 200, 600, 215], [400, 380, 440, 420], [10, 300, 50, 340], [520, 60, 532, 72]],
                       dtype=float)
    boxes, scores = detect_image(_replay_predictor(craters, width), image, tile_size_px=256, overlap_px=64)
    assert len(boxes) == len(craters)
    got = sorted(map(tuple, boxes.round(6)))
    assert got == sorted(map(tuple, craters))
    assert np.all(scores == 0.9)


def test_uncapped_config_allows_a_detection_per_smallest_crater():
    from detectron2_rfcn.config import get_rfcn_cfg

    cfg = get_rfcn_cfg("configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml")
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50
    big = uncapped_config(cfg, 512)
    assert big.TEST.DETECTIONS_PER_IMAGE == 4096 and big.MODEL.RPN.POST_NMS_TOPK_TEST == 4096
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50  # the original is left alone


def test_read_plain_image_scales_8_and_16_bit(tmp_path):
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "b.png")
    assert read_plain_image(tmp_path / "a.png").tolist() == [[[0.0, 1.0]]]
    assert read_plain_image(tmp_path / "b.png").tolist() == [[[0.0, 1.0]]]


@pytest.mark.slow
def test_detect_command_writes_boxes_for_a_png(tmp_path):
    """A real (untrained) one-channel R-FCN through the command: boxes inside the image in CSV,
    the same boxes in the COCO results file."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from detectron2_rfcn.config import get_rfcn_cfg
    from etl.cli import main

    cfg = get_rfcn_cfg("configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml",
                       ["MODEL.PIXEL_MEAN", "[0.5]", "MODEL.PIXEL_STD", "[0.25]", "MODEL.RFCN.INPUT_CHANNELS", "['dom']"])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 420), dtype=np.uint8)).save(tmp_path / "frame.png")
    rc = main(["detect", str(tmp_path / "frame.png"), "--config-file", str(tmp_path / "config.yaml"),
               "--weights", str(tmp_path / "model.pth"), "--out", str(tmp_path / "out"), "--score-threshold", "0",
               "--tile-size", "256", "--overlap", "64"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "out" / "frame.csv")
    assert len(df) > 0
    assert (df.x0_px >= 0).all() and (df.y0_px >= 0).all() and (df.x1_px <= 420).all() and (df.y1_px <= 300).all()
    assert (df.x1_px > df.x0_px).all() and (df.y1_px > df.y0_px).all()
    coco = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert len(coco) == len(df) and {c["file_name"] for c in coco} == {"frame.png"}
    assert np.allclose([c["bbox"][0] for c in coco], df.x0_px, atol=0.01)


def _fake_nac(tmp_path, n: int, size: int = 300):
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(tmp_path / f"f{k}.png")
        # One crater in the last 20 px of the frame (where a grid that stops before the edge drops it).
        (tmp_path / f"f{k}.txt").write_text(f"ID,X,Y,W,H,C_X,CY\n0,10,10,20,20,20,20\n1,{size - 18},{size - 18},16,16,0,0\n")
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(tmp_path / "unlabelled.png")


def test_nac_builder_uses_every_labelled_frame_and_its_edges(tmp_path):
    from detectron2_rfcn.nac_data import convert_nac_to_tile_dataset, nac_splits

    _fake_nac(tmp_path, 5)
    out = convert_nac_to_tile_dataset(tmp_path, tmp_path / "ds", n_val=1, n_test=1, tile_size_px=128, overlap_px=16)
    info = json.loads((out / "dataset.json").read_text())
    # 3 training frames of 300 px: tiles at 0, 112, 172 on each axis (the last flush with the edge).
    assert info["splits"] == {"train": 27, "val": 1, "test": 1}
    assert info["source_mosaics"] == {"train": ["f0.png", "f1.png", "f2.png"], "val": ["f3.png"], "test": ["f4.png"]}
    train = json.loads((out / "train.json").read_text())
    corner = [im for im in train["images"] if im["window"][:2] == [172, 172]]
    assert len(corner) == 3
    edge_craters = [a for a in train["annotations"] if a["image_id"] == corner[0]["id"]]
    assert [a["bbox"] for a in edge_craters] == [[110.0, 110.0, 16.0, 16.0]]
    test = json.loads((out / "test.json").read_text())
    assert test["images"][0]["width"] == 300 and len(test["annotations"]) == 2  # a whole frame, every crater once
    folds = [nac_splits([tmp_path / f"f{k}.png" for k in range(12)], folds=4, fold=k) for k in range(4)]
    assert sorted(p.name for f in folds for p in f["test"]) == sorted(f"f{k}.png" for k in range(12))
    assert all(len(f["test"]) == 3 and len(f["val"]) == 1 and len(f["train"]) == 8 for f in folds)
    assert all(not set(f["test"]) & set(f["train"]) and not set(f["val"]) & set(f["train"]) for f in folds)


def test_empty_test_split_is_not_evaluated(tmp_path):
    from detectron2_rfcn.config import get_rfcn_cfg
    from detectron2_rfcn.data import setup_crater_datasets
    from detectron2_rfcn.engine import drop_empty_test_sets
    from detectron2_rfcn.nac_data import convert_nac_to_tile_dataset

    _fake_nac(tmp_path, 3)
    out = convert_nac_to_tile_dataset(tmp_path, tmp_path / "ds", n_val=1, n_test=0, tile_size_px=128)
    cfg = get_rfcn_cfg("configs/NAC-Transfer/rfcn_timm_R_18_DC4_600it.yaml",
                       ["DATASETS.CRATER.DIR", str(out), "DATASETS.CRATER.NAME_PREFIX", "nacempty"])
    cfg.DATASETS.TEST = ("nacempty_val", "nacempty_test")
    setup_crater_datasets(cfg)
    assert drop_empty_test_sets(cfg) == ["nacempty_test"]
    assert tuple(cfg.DATASETS.TEST) == ("nacempty_val",)


def test_figure_draws_a_tile_dataset_without_a_crs(tmp_path):
    from etl.cli import main
    from etl.commands.figure import draw_dataset_tile_figure
    from detectron2_rfcn.nac_data import convert_nac_to_tile_dataset

    _fake_nac(tmp_path, 3)
    out = convert_nac_to_tile_dataset(tmp_path, tmp_path / "ds", n_val=1, n_test=1, tile_size_px=128)
    assert main(["figure", "--dataset", str(out), "--split", "test", "--out", str(tmp_path / "t.png")]) == 0
    with Image.open(tmp_path / "t.png") as png:
        assert png.size[0] > 300 and png.size[1] > 300
    with pytest.raises(ValueError, match="no tile 'nope'"):
        draw_dataset_tile_figure(out, tmp_path / "u.png", tile_id="nope")


def test_evaluator_summary_says_its_units_and_coco_ap_counts_every_detection():
    """A frame of 300 craters, all found: the summary says % and px, and COCO AP (which by default
    counts 100 detections an image) is 100."""
    from detectron2.structures import Boxes, BoxMode, Instances

    from detectron2_rfcn import CraterEvaluator

    xs, ys = np.meshgrid(np.arange(15) * 50.0, np.arange(20) * 50.0)
    boxes = np.c_[xs.ravel(), ys.ravel(), xs.ravel() + 20, ys.ravel() + 20]
    gt = [{"image_id": 1, "height": 1000, "width": 750, "annotations": [
        {"bbox": BoxMode.convert(list(b), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS), "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": 0, "iscrowd": 0} for b in boxes]}]
    inst = Instances((1000, 750))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.linspace(0.99, 0.6, len(boxes))
    inst.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
    ev = CraterEvaluator("units", dataset_dicts=gt, distributed=False, coco_ap=True)
    ev.process([{"image_id": 1}], [{"instances": inst}])
    res = ev.evaluate()
    assert res["craters"]["recall"] == 100.0 and res["bbox"]["AP50"] == pytest.approx(100.0)
    text = ev.summary(res["craters"])
    assert "300 craters >= 10 px" in text and "recall 100.0 %" in text and "diameter, px" in text
