"""Local pretrained weights: torchvision/timm ResNets and our own checkpoints, first conv adapted."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2_rfcn import get_rfcn_cfg
from detectron2_rfcn.weights import adapt_first_conv, convert_weights

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick_schedules"


def test_adapt_first_conv_by_name_and_by_count():
    w = torch.randn(8, 3, 7, 7)
    by_name = adapt_first_conv(w, 2, ["dom", "dem", "slope"], ["slope", "dom"])
    # Only 2 of the 3 source channels feed the conv: slices rescaled by 3/2.
    assert torch.allclose(by_name[:, 0], w[:, 2] * 1.5) and torch.allclose(by_name[:, 1], w[:, 0] * 1.5)
    new = adapt_first_conv(w, 4, ["r", "g", "b"], ["r", "g", "b", "dem"])
    assert torch.equal(new[:, :3], w) and torch.allclose(new[:, 3], w.mean(dim=1))
    assert torch.allclose(adapt_first_conv(w, 1), w.sum(dim=1, keepdim=True))
    assert adapt_first_conv(w, 5).shape == (8, 5, 7, 7)


def test_torchvision_resnet18_into_d2_backbone(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    out = convert_weights(tmp_path / "r18.pth", tmp_path / "r18_d2.pth", to="d2", dst_in=4,
                          src_channels=["r", "g", "b"], dst_channels=["r", "g", "b", "dem"])
    cfg = get_rfcn_cfg(str(QUICK / "rfcn_R_18_C4_instant_test.yaml"),
                       ["MODEL.PIXEL_MEAN", "[0.5,0.5,0.5,0.5]", "MODEL.PIXEL_STD", "[0.2,0.2,0.2,0.2]"])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(out), checkpointables=[])
    bb = model.backbone
    assert torch.equal(bb.stem.conv1.weight[:, :3], tv.conv1.weight)
    assert torch.equal(bb.res3[0].conv1.weight, tv.layer2[0].conv1.weight)
    assert torch.equal(bb.res3[0].shortcut.weight, tv.layer2[0].downsample[0].weight)
    assert torch.equal(bb.res4[1].conv2.norm.running_var, tv.layer3[1].bn2.running_var)


def test_crater_model_to_fewer_channels(tmp_path):
    src_cfg = get_rfcn_cfg(str(QUICK / "rfcn_timm_R_18_instant_test.yaml"))
    src = build_model(src_cfg)
    torch.save({"model": src.state_dict(), "iteration": 99}, tmp_path / "synth.pth")
    out = convert_weights(tmp_path / "synth.pth", tmp_path / "nac.pth", to="ours", dst_in=1,
                          src_channels=["dom", "dem", "slope"], dst_channels=["dom"])
    dst = build_model(get_rfcn_cfg(str(QUICK / "rfcn_timm_R_18_instant_test.yaml"),
                                   ["MODEL.PIXEL_MEAN", "[0.5]", "MODEL.PIXEL_STD", "[0.2]"]))
    DetectionCheckpointer(dst).load(str(out), checkpointables=[])
    assert torch.allclose(dst.backbone.trunk.conv1.weight[:, 0], src.backbone.trunk.conv1.weight[:, 0] * 3)
    assert torch.equal(dst.roi_heads.cls_score_maps.weight, src.roi_heads.cls_score_maps.weight)
    assert "iteration" not in torch.load(out, weights_only=False)
