"""Training and evaluation (``detectron2_rfcn.engine``) end to end on a tiny tile dataset: train
a few iterations, then --eval-only; ``tools/train_net.py`` and ``python -m`` launch the same main."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detectron2.engine import default_argument_parser
from detectron2_rfcn import engine
from script_loader import load_script
from toy_tiles import write_toy_crater_dataset

REPO = Path(__file__).resolve().parents[1]


def _train_net_script():
    return load_script("tools/train_net.py", name="rfcn_train_net")


@pytest.mark.slow
def test_train_then_eval_only(tmp_path):
    data = write_toy_crater_dataset(tmp_path / "tiles", tiles_per_split={"train": 4, "val": 1, "test": 2})
    out = tmp_path / "run"
    common = ["--config-file", str(REPO / "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml")]
    opts = ["DATASETS.CRATER.DIR", str(data), "DATASETS.CRATER.NAME_PREFIX", "trainnet",
            "DATASETS.TRAIN", "('trainnet_train',)", "DATASETS.TEST", "('trainnet_test',)",
            "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out), "TEST.CRATER_EVAL.COCO_AP", "False"]
    parser = default_argument_parser()
    engine.main(parser.parse_args(common + opts))
    weights = out / "model_final.pth"
    assert weights.is_file() and (out / "config.yaml").is_file()
    # Training records the threshold calibrated on the val split with the model, and draws its curves.
    from detectron2_rfcn.config import default_score_threshold, get_rfcn_cfg

    calibration = json.loads((out / "calibration.json").read_text())
    saved = get_rfcn_cfg(str(out / "config.yaml"))
    assert calibration["dataset"] == "trainnet_val" and 0.0 <= calibration["score_thresh"] <= 1.0
    assert saved.MODEL.RFCN.CALIBRATED_SCORE_THRESH == pytest.approx(calibration["score_thresh"])
    assert default_score_threshold(saved) == pytest.approx(calibration["score_thresh"])
    # ... and the matched craters' median true / detected diameter there, recorded, not applied
    # (TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE is off by default).
    ratio = calibration["metrics"]["diameter_ratio_at_best_f1"]
    assert calibration["diameter_ratio"] == pytest.approx(ratio, nan_ok=True)
    assert calibration["diameter_scale"] == 1.0 and saved.MODEL.RFCN.DIAMETER_SCALE == 1.0
    assert (out / "learning_curves.png").stat().st_size > 5000

    res = engine.main(parser.parse_args(common + ["--eval-only"] + opts + ["MODEL.WEIGHTS", str(weights)]))
    craters = res["craters"]
    # Ground truth counted, from the file: the test tiles' whole craters of >= 10 px (MIN_DIAMETER_PX).
    gt = json.loads((data / "test.json").read_text())["annotations"]
    expected_gt = sum(not a["truncated"] and a["diameter_px"] >= 10 for a in gt)
    assert expected_gt > 0 and craters["num_gt"] == expected_gt
    # Recall counts whole craters found: a multiple of 1/num_gt; F1 is the harmonic mean of P and R.
    found = craters["recall"] / 100.0 * expected_gt
    assert found == pytest.approx(round(found), abs=1e-9)
    p, r = craters["precision"], craters["recall"]
    assert craters["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert craters["best_f1"] >= craters["f1"] - 1e-9  # the best threshold is at least the operating one
    assert sum(v for k, v in craters.items() if k.startswith("num_gt_")) == expected_gt  # bins cover every size


def test_frozen_bn_without_weights_is_refused(tmp_path):
    args = default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/rfcn_R_50_C4_1x.yaml"), "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ValueError, match="FrozenBN"):
        engine.setup(args)
    # From scratch with BN, the same config is accepted.
    args = default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/rfcn_R_50_C4_1x.yaml"), "OUTPUT_DIR", str(tmp_path),
         "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0"])
    assert engine.setup(args).MODEL.RESNETS.NORM == "BN"


def test_the_script_launches_the_package_main():
    assert _train_net_script().main is engine.main  # the script holds no logic of its own


@pytest.mark.slow
def test_python_m_engine_runs():
    out = subprocess.run([sys.executable, "-m", "detectron2_rfcn.engine", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--config-file" in out.stdout and "--eval-only" in out.stdout


def test_calibration_rule_picks_the_threshold_and_falls_back_to_best_f1(tmp_path):
    """calibrate_score_threshold records the threshold of TEST.CRATER_EVAL.CALIBRATION_RULE, with the
    diameter ratio measured at that threshold; "target_precision" on a split that never reaches the
    target precision records the best-F1 threshold; an unknown rule is refused."""
    from detectron2.data import DatasetCatalog

    from detectron2_rfcn.config import get_rfcn_cfg

    name = "calibrule_val"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"image_id": 0}])
    metrics = {"best_f1": 80.0, "best_f1_score_thresh": 0.3, "target_precision_score_thresh": 0.6,
               "diameter_ratio_at_best_f1": 0.9, "diameter_ratio_at_target_precision": 0.95}

    def calibrate(rule, m, apply_scale=True):
        cfg = get_rfcn_cfg(str(REPO / "configs/Base-RFCN.yaml"),
                           ["DATASETS.CRATER.NAME_PREFIX", "calibrule", "OUTPUT_DIR", str(tmp_path),
                            "TEST.CRATER_EVAL.CALIBRATION_RULE", rule, "MODEL.DEVICE", "cpu",
                            "TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE", str(apply_scale)])
        threshold = engine.calibrate_score_threshold(cfg, None, {name: {"craters": m}})
        return threshold, json.loads((tmp_path / "calibration.json").read_text())

    threshold, saved = calibrate("best_f1", metrics)
    assert threshold == 0.3 and saved["rule"] == "best_f1" and saved["diameter_scale"] == pytest.approx(0.9)
    threshold, saved = calibrate("target_precision", metrics)
    assert threshold == 0.6 and saved["rule"] == "target_precision" and saved["diameter_scale"] == pytest.approx(0.95)
    threshold, saved = calibrate("target_precision", {**metrics, "target_precision_score_thresh": float("nan")})
    assert threshold == 0.3 and saved["rule"] == "best_f1" and saved["diameter_scale"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="CALIBRATION_RULE"):
        calibrate("median", metrics)


def test_diameter_scale_is_recorded_but_applied_only_when_asked(tmp_path):
    """By default calibration measures the val craters' median true / detected diameter and records
    it ("diameter_ratio"), but leaves MODEL.RFCN.DIAMETER_SCALE as it was (a scale from one region
    did not carry to another on LOLA); TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE multiplies the
    current scale by it."""
    from detectron2.data import DatasetCatalog

    from detectron2_rfcn.config import get_rfcn_cfg

    name = "calibscale_val"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"image_id": 0}])
    metrics = {"best_f1": 80.0, "best_f1_score_thresh": 0.3, "diameter_ratio_at_best_f1": 0.9}

    def calibrate(*opts):
        cfg = get_rfcn_cfg(str(REPO / "configs/Base-RFCN.yaml"),
                           ["DATASETS.CRATER.NAME_PREFIX", "calibscale", "OUTPUT_DIR", str(tmp_path),
                            "MODEL.DEVICE", "cpu", *opts])
        assert engine.calibrate_score_threshold(cfg, None, {name: {"craters": metrics}}) == 0.3
        return (json.loads((tmp_path / "calibration.json").read_text()),
                get_rfcn_cfg(str(tmp_path / "config.yaml")).MODEL.RFCN.DIAMETER_SCALE)

    saved, scale = calibrate()
    assert saved["diameter_ratio"] == pytest.approx(0.9) and saved["diameter_scale"] == 1.0 and scale == 1.0
    saved, scale = calibrate("MODEL.RFCN.DIAMETER_SCALE", "1.1")
    assert saved["diameter_scale"] == pytest.approx(1.1) and scale == pytest.approx(1.1)
    saved, scale = calibrate("TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE", "True", "MODEL.RFCN.DIAMETER_SCALE", "1.1")
    assert saved["diameter_scale"] == pytest.approx(0.99) and scale == pytest.approx(0.99)
