"""Position-sensitive pooling and voting against slow references; OHEM picks hard RoIs."""
from __future__ import annotations

import torch
from torchvision.ops import ps_roi_align, roi_align

from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.modeling import build_model
from detectron2_rfcn import get_rfcn_cfg, ps_roi_vote

from pathlib import Path

QUICK = str(Path(__file__).resolve().parents[1] / "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml")


def _slow_bilinear(img, y, x):
    """Bilinear value of a (H, W) map at continuous (y, x), torchvision's border rules."""
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return float((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
                 + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def _slow_ps_roi_vote(maps, rois, k, scale, s):
    """Loops: bin (i, j) of class c averages s x s samples of map c*k*k + i*k + j; then the
    k x k bins are averaged."""
    c_out = maps.shape[1] // (k * k)
    out = torch.zeros(len(rois), c_out, k, k, dtype=torch.float64)
    for r, (b, x0, y0, x1, y1) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (v * scale - 0.5 for v in (x0, y0, x1, y1))
        bw, bh = (x1 - x0) / k, (y1 - y0) / k
        for c in range(c_out):
            for i in range(k):
                for j in range(k):
                    m = maps[int(b), c * k * k + i * k + j].double()
                    vals = [_slow_bilinear(m, y0 + i * bh + (iy + 0.5) * bh / s, x0 + j * bw + (ix + 0.5) * bw / s)
                            for iy in range(s) for ix in range(s)]
                    out[r, c, i, j] = sum(vals) / len(vals)
    return out


def test_ps_roi_align_matches_slow_reference_and_votes_by_mean():
    g = torch.Generator().manual_seed(0)
    k, c_out, s = 3, 2, 2
    maps = torch.randn(2, k * k * c_out, 9, 11, generator=g)
    rois = torch.tensor([[0, 4.0, 3.0, 30.0, 25.0], [1, 0.0, 0.0, 43.0, 35.0], [1, 10.5, 7.25, 20.0, 33.0]])
    scale = 0.25
    ref = _slow_ps_roi_vote(maps, rois, k, scale, s)
    fast = ps_roi_align(maps, rois, output_size=k, spatial_scale=scale, sampling_ratio=s)
    assert fast.shape == (3, c_out, k, k)
    assert torch.allclose(fast.double(), ref, atol=1e-5)
    voted = ps_roi_vote(maps, rois, k, scale, s)
    assert torch.allclose(voted.double(), ref.mean(dim=(2, 3)), atol=1e-5)


def test_each_bin_reads_only_its_own_map():
    # Map c*k*k + i*k + j is the constant 100*c + 10*i + j: pooling returns exactly that per bin,
    # which is only true for the channel layout documented in ps_roi_head.py.
    k, c_out = 3, 2
    vals = torch.tensor([100 * c + 10 * i + j for c in range(c_out) for i in range(k) for j in range(k)],
                        dtype=torch.float32)
    maps = vals.view(1, -1, 1, 1).expand(1, len(vals), 12, 12).contiguous()
    pooled = ps_roi_align(maps, torch.tensor([[0, 8.0, 8.0, 40.0, 40.0]]), output_size=k, spatial_scale=0.25,
                          sampling_ratio=2)
    assert torch.equal(pooled[0], vals.view(c_out, k, k))
    # And it agrees with an ordinary RoIAlign of the one map each bin owns.
    full = roi_align(maps, torch.tensor([[0, 8.0, 8.0, 40.0, 40.0]]), output_size=k, spatial_scale=0.25,
                     sampling_ratio=2, aligned=True)
    for c in range(c_out):
        for i in range(k):
            for j in range(k):
                assert pooled[0, c, i, j] == full[0, c * k * k + i * k + j, i, j]


def _head_and_proposals(ohem: bool):
    cfg = get_rfcn_cfg(QUICK, ["MODEL.RFCN.OHEM", str(ohem), "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "4",
                               "MODEL.RFCN.OHEM_NMS_THRESH", "-1.0"])
    head = build_model(cfg).roi_heads.train()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g) * 60
    props = Instances((96, 96))
    props.proposal_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(40, 2, generator=g) * 20], 1))
    props.objectness_logits = torch.zeros(40)
    tgt = Instances((96, 96))
    tgt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0]]))
    tgt.gt_classes = torch.zeros(1, dtype=torch.long)
    return head, props, tgt


def test_ohem_keeps_the_hardest_rois():
    head, props, tgt = _head_and_proposals(ohem=True)
    with EventStorage():
        labelled = head.label_and_sample_proposals([props], [tgt])
    # OHEM labels every proposal (+ the appended ground truth), it does not subsample.
    assert len(labelled[0]) == 41
    roi_loss = torch.arange(41, dtype=torch.float32).flip(0)  # RoI 0 hardest
    keep = head._ohem_select(roi_loss, labelled[0].proposal_boxes.tensor, [41])
    assert keep.tolist() == [0, 1, 2, 3]


def test_losses_are_finite_with_and_without_ohem():
    for ohem in (True, False):
        head, props, tgt = _head_and_proposals(ohem)
        feats = {"res5": torch.randn(1, head.reduce.in_channels, 6, 6, requires_grad=True)}
        with EventStorage():
            _, losses = head(None, feats, [props], [tgt])
        assert set(losses) == {"loss_cls", "loss_box_reg"}
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        assert feats["res5"].grad is not None and feats["res5"].grad.abs().sum() > 0


def test_diameter_scale_resizes_boxes_about_their_centres():
    """MODEL.RFCN.DIAMETER_SCALE (the calibrated diameter correction) multiplies width and height of
    every detected box and keeps its centre: the same model at scale 1 and 0.8."""
    feats = {"res5": torch.randn(1, 0, 6, 6)}
    boxes = {}
    for scale in (1.0, 0.8):
        cfg = get_rfcn_cfg(QUICK, ["MODEL.RFCN.DIAMETER_SCALE", str(scale), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                   "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0"])
        torch.manual_seed(0)
        head = build_model(cfg).roi_heads.eval()
        feats["res5"] = torch.randn(1, head.reduce.in_channels, 6, 6, generator=torch.Generator().manual_seed(2))
        props = Instances((96, 96))
        props.proposal_boxes = Boxes(torch.tensor([[20.0, 20.0, 50.0, 50.0], [40.0, 30.0, 60.0, 70.0]]))
        props.objectness_logits = torch.zeros(2)
        with torch.no_grad():
            (inst,), _ = head(None, feats, [props])
        order = torch.argsort(inst.pred_boxes.tensor[:, 0])
        boxes[scale] = inst.pred_boxes.tensor[order]
    b1, b8 = boxes[1.0], boxes[0.8]
    assert len(b1) == 2
    torch.testing.assert_close((b8[:, :2] + b8[:, 2:]) / 2, (b1[:, :2] + b1[:, 2:]) / 2)
    torch.testing.assert_close(b8[:, 2:] - b8[:, :2], 0.8 * (b1[:, 2:] - b1[:, :2]))
