"""Every YAML in configs/ loads with our keys and builds a model; _BASE_ stays inside configs/."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2_rfcn import PSROIHeads, RFCN, add_rfcn_config, get_rfcn_cfg

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# The age net's YAMLs are not Detectron2 configs: tests/test_age_net.py loads and builds them.
AGE_NET_DIR = CONFIG_DIR / "age_net"
ALL_YAMLS = sorted(CONFIG_DIR.rglob("*.yaml"))
DETECTOR_YAMLS = sorted(p for p in ALL_YAMLS if AGE_NET_DIR not in p.parents
                        and ("META_ARCHITECTURE" in p.read_text() or "_BASE_" in p.read_text()))

BASE = CONFIG_DIR / "Base-RFCN.yaml"
RFCN_LEAVES = sorted(p for p in DETECTOR_YAMLS if p != BASE and "age_net" not in p.relative_to(CONFIG_DIR).parts)


def test_there_are_detector_configs():
    names = {p.name for p in DETECTOR_YAMLS}
    assert {"Base-RFCN.yaml", "rfcn_R_50_C4_1x.yaml", "rfcn_R_101_C4_3x.yaml"} <= names
    assert any(p.parent.name == "quick_schedules" for p in DETECTOR_YAMLS)


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
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


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _merged(path: Path):
    """Defaults + ours + the file, the device left unresolved ("auto" stays "auto")."""
    cfg = add_rfcn_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


def _value(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("path", RFCN_LEAVES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_leaf_sits_on_the_base_and_states_only_what_differs(path):
    """One Base, no chains; every key of a leaf changes what it would inherit from the Base."""
    raw = yaml.safe_load(path.read_text())
    assert (path.parent / raw.pop("_BASE_")).resolve() == BASE, f"{path.name}: _BASE_ must be Base-RFCN.yaml"
    inherited, leaf = _merged(BASE), _merged(path)
    restated = [k for k in _flat(raw) if _value(leaf, k) == _value(inherited, k)]
    assert restated == [], f"{path.name} restates inherited values: {restated}"


def test_the_leaf_check_sees_a_restated_key_and_a_chain(tmp_path):
    restating = tmp_path / "rfcn_restating.yaml"
    restating.write_text(f'_BASE_: "{BASE}"\nMODEL:\n  RFCN:\n    POOL_SIZE: 7\n    REDUCTION_DIM: 256\n')
    with pytest.raises(AssertionError, match=r"restates inherited values: \['MODEL.RFCN.POOL_SIZE'\]"):
        test_leaf_sits_on_the_base_and_states_only_what_differs(restating)
    chained = tmp_path / "rfcn_chained.yaml"
    chained.write_text(f'_BASE_: "{CONFIG_DIR / "rfcn_R_50_C4_1x.yaml"}"\n')
    with pytest.raises(AssertionError, match="must be Base-RFCN.yaml"):
        test_leaf_sits_on_the_base_and_states_only_what_differs(chained)
