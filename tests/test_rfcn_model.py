"""RFCN end to end on random odd-sized multi-channel images: losses, gradients, inference."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2_rfcn import get_rfcn_cfg

QUICK_DIR = Path(__file__).resolve().parents[1] / "configs" / "quick_schedules"
QUICK_YAMLS = ["rfcn_timm_R_18_instant_test.yaml", "rfcn_R_18_C4_instant_test.yaml",
               "rfcn_R_50_C4_instant_test.yaml"]
LOSS_NAMES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def _input(g, height, width, num_craters, channels=4):
    inst = Instances((height, width))
    xy = torch.rand(num_craters, 2, generator=g) * torch.tensor([width - 30.0, height - 30.0])
    d = 8 + torch.rand(num_craters, 1, generator=g) * 20
    inst.gt_boxes = Boxes(torch.cat([xy, xy + d], dim=1))
    inst.gt_classes = torch.zeros(num_craters, dtype=torch.long)
    return {"image": torch.rand(channels, height, width, generator=g), "instances": inst,
            "height": height, "width": width}


def _model(yaml_name, ohem=True):
    torch.manual_seed(0)
    # Four channels (e.g. DOM, DEM, slope, hillshade): the stem must follow PIXEL_MEAN.
    cfg = get_rfcn_cfg(str(QUICK_DIR / yaml_name), [
        "MODEL.DEVICE", "cpu", "MODEL.PIXEL_MEAN", "[0.5, 0.5, 0.5, 0.5]",
        "MODEL.PIXEL_STD", "[0.25, 0.25, 0.25, 0.25]", "MODEL.RFCN.OHEM", str(ohem)])
    return build_model(cfg)


@pytest.mark.parametrize("yaml_name", [pytest.param(y, marks=pytest.mark.slow) if "R_50" in y else y
                                       for y in QUICK_YAMLS])  # ~6 s a step on 2 cores
def test_training_step_finite_losses_and_backbone_gradients(yaml_name):
    model = _model(yaml_name).train()
    g = torch.Generator().manual_seed(0)
    # Odd sizes (not multiples of the stride) and one image with no ground truth.
    batch = [_input(g, 97, 131, 5), _input(g, 83, 77, 0)]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == LOSS_NAMES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    stem = next(p for n, p in model.backbone.named_parameters() if p.ndim == 4)
    assert stem.shape[1] == 4
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    head_grad = model.roi_heads.cls_score_maps.weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0


def test_training_without_ohem():
    model = _model(QUICK_YAMLS[0], ohem=False).train()
    g = torch.Generator().manual_seed(1)
    with EventStorage():
        losses = model([_input(g, 65, 71, 3), _input(g, 64, 64, 2)])
    assert set(losses) == LOSS_NAMES and all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("yaml_name", QUICK_YAMLS[:2])
def test_inference_fields_at_input_size(yaml_name):
    model = _model(yaml_name).eval()
    g = torch.Generator().manual_seed(2)
    # The second input asks for outputs at twice its tensor size (as after a resize).
    inputs = [{"image": torch.rand(4, 97, 131, generator=g), "height": 97, "width": 131},
              {"image": torch.rand(4, 61, 89, generator=g), "height": 122, "width": 178}]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for inp, out in zip(inputs, outputs):
        inst = out["instances"]
        assert inst.image_size == (inp["height"], inp["width"])
        assert inst.has("pred_boxes") and inst.has("scores") and inst.has("pred_classes")
        assert len(inst) > 0  # random weights, score threshold 0.05 < uniform softmax 0.5
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= inp["width"]).all() and (b[:, 3] <= inp["height"]).all()
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert (inst.pred_classes == 0).all()
    # Rescaling to the requested size reaches boxes beyond the tensor's own extent.
    assert outputs[1]["instances"].pred_boxes.tensor[:, 2].max() > 89
