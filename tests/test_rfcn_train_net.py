"""tools/train_net.py end to end on a tiny tile dataset: train a few iterations, then --eval-only."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from detectron2_rfcn.toy_data import write_toy_crater_dataset

REPO = Path(__file__).resolve().parents[1]


def _train_net():
    spec = importlib.util.spec_from_file_location("rfcn_train_net", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_then_eval_only(tmp_path):
    train_net = _train_net()
    data = write_toy_crater_dataset(tmp_path / "tiles", tiles_per_split={"train": 4, "val": 1, "test": 2})
    out = tmp_path / "run"
    common = ["--config-file", str(REPO / "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml")]
    opts = ["DATASETS.CRATER.DIR", str(data), "DATASETS.CRATER.NAME_PREFIX", "trainnet",
            "DATASETS.TRAIN", "('trainnet_train',)", "DATASETS.TEST", "('trainnet_test',)",
            "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out), "TEST.CRATER_EVAL.COCO_AP", "False"]
    parser = train_net.default_argument_parser()
    train_net.main(parser.parse_args(common + opts))
    weights = out / "model_final.pth"
    assert weights.is_file() and (out / "config.yaml").is_file()

    res = train_net.main(parser.parse_args(common + ["--eval-only"] + opts + ["MODEL.WEIGHTS", str(weights)]))
    craters = res["craters"]
    # Ground truth counted: non-truncated craters >= 10 px of the two test tiles.
    assert craters["num_gt"] > 0
    assert 0.0 <= craters["recall"] <= 100.0 and not math.isnan(craters["best_f1"])


def test_frozen_bn_without_weights_is_refused(tmp_path):
    train_net = _train_net()
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/rfcn_R_50_C4_1x.yaml"), "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ValueError, match="FrozenBN"):
        train_net.setup(args)
