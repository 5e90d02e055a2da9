"""Every YAML in configs/ loads with our keys and builds a model; _BASE_ stays inside configs/."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectron2.modeling import build_model
from detectron2_rfcn import PSROIHeads, RFCN, get_rfcn_cfg

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DETECTOR_YAMLS = sorted(p for p in CONFIG_DIR.rglob("*.yaml")
                        if "META_ARCHITECTURE" in p.read_text() or "_BASE_" in p.read_text())


def test_there_are_detector_configs():
    names = {p.name for p in DETECTOR_YAMLS}
    assert {"Base-RFCN.yaml", "rfcn_R_50_C4_1x.yaml", "rfcn_R_101_C4_3x.yaml"} <= names
    assert any(p.parent.name == "quick_schedules" for p in DETECTOR_YAMLS)


@pytest.mark.parametrize("path", DETECTOR_YAMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_bases_stay_inside_configs(path):
    base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
    if base is not None:
        resolved = (path.parent / base).resolve()
        assert resolved.is_file(), f"{path}: _BASE_ {base} not found"
        assert CONFIG_DIR in resolved.parents, f"{path}: _BASE_ {base} leaves configs/"


@pytest.mark.parametrize("path", DETECTOR_YAMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_builds_an_rfcn(path):
    cfg = get_rfcn_cfg(str(path), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert isinstance(model, RFCN)
    assert isinstance(model.roi_heads, PSROIHeads)
    shapes = model.backbone.output_shape()
    # Score maps at stride 16 (the paper's design, also on light trunks) or 8 (small craters).
    assert shapes[cfg.MODEL.RFCN.IN_FEATURE].stride in (8, 16)
    assert all(f in shapes for f in cfg.MODEL.RPN.IN_FEATURES)
    assert model.pixel_mean.numel() == len(cfg.MODEL.PIXEL_MEAN)
    k = cfg.MODEL.RFCN.POOL_SIZE
    assert model.roi_heads.cls_score_maps.out_channels == k * k * (cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
    assert model.roi_heads.box_maps.out_channels == k * k * 4


def test_device_auto_resolves():
    cfg = get_rfcn_cfg(str(CONFIG_DIR / "Base-RFCN.yaml"))
    import torch
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    assert get_rfcn_cfg(str(CONFIG_DIR / "Base-RFCN.yaml"), ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"


@pytest.mark.parametrize("yaml_name", ["quick_schedules/rfcn_timm_R_18_instant_test.yaml",
                                       "quick_schedules/rfcn_R_18_C4_instant_test.yaml"])
def test_input_channels_follow_pixel_mean(yaml_name):
    cfg = get_rfcn_cfg(str(CONFIG_DIR / yaml_name),
                       ["MODEL.PIXEL_MEAN", "[0.5, 0.5]", "MODEL.PIXEL_STD", "[0.2, 0.2]"])
    model = build_model(cfg)
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch_nn_conv()))
    assert first_conv.in_channels == 2


def torch_nn_conv():
    import torch
    return torch.nn.Conv2d
