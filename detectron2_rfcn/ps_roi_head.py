"""The position-sensitive RoI head of R-FCN (Dai et al. 2016), as a Detectron2 ROI head.

All learnable computation is shared over the whole image: a 1x1 reduction conv, then
``k*k*(C+1)`` position-sensitive class score maps and ``k*k*4`` class-agnostic box maps.
Per RoI only pooling remains: bin (i, j) of the RoI reads only its own score map
(``torchvision.ops.ps_roi_align``) and the k x k bins vote by averaging. This is why R-FCN
is faster than Faster R-CNN-C4, which runs the whole res5 stage once per RoI.

Channel layout (checked against a slow reference in tests/test_rfcn_ps_roi_head.py):
score-map channel ``c * k * k + i * k + j`` holds class (or box coordinate) ``c`` for the
bin in row ``i`` (top to bottom) and column ``j`` (left to right).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, ps_roi_align

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, ROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats, fast_rcnn_inference
from detectron2.structures import ImageList, Instances
from fvcore.nn import smooth_l1_loss

__all__ = ["PSROIHeads", "ps_roi_vote", "scale_boxes_about_centres"]


def ps_roi_vote(score_maps: torch.Tensor, rois: torch.Tensor, pool_size: int, spatial_scale: float,
                sampling_ratio: int) -> torch.Tensor:
    """Position-sensitive RoI pooling followed by average voting.

    Args:
        score_maps: (N, k*k*C, H, W) position-sensitive maps.
        rois: (R, 5) ``[batch_index, x0, y0, x1, y1]`` in input-image pixels.
        spatial_scale: 1 / stride of ``score_maps``.
    Returns:
        (R, C): for each RoI, the mean over its k x k bins of the bin's own map.
    """
    pooled = ps_roi_align(score_maps, rois, output_size=pool_size, spatial_scale=spatial_scale,
                          sampling_ratio=sampling_ratio)  # (R, C, k, k)
    return pooled.mean(dim=(2, 3))


def scale_boxes_about_centres(boxes_xyxy: torch.Tensor, scale: float) -> torch.Tensor:
    """XYXY boxes with width and height multiplied by ``scale``, centres kept."""
    centres = (boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2.0
    half = (boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]) * (scale / 2.0)
    return torch.cat([centres - half, centres + half], dim=1)


@ROI_HEADS_REGISTRY.register()
class PSROIHeads(ROIHeads):
    """R-FCN's position-sensitive head: score/box maps, PS RoI pooling, voting, softmax.

    Training returns ``{"loss_cls", "loss_box_reg"}``; with OHEM it scores every proposal
    and keeps the hardest ``batch_size_per_image`` per image. Inference returns
    ``Instances`` (pred_boxes, scores, pred_classes) after score threshold, NMS and top-k.
    """

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        feature_stride: int,
        pool_size: int,
        reduction_dim: int,
        sampling_ratio: int,
        box2box_transform: Box2BoxTransform,
        smooth_l1_beta: float = 0.0,
        ohem: bool = True,
        ohem_nms_thresh: float = 0.7,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        diameter_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not diameter_scale > 0:
            raise ValueError(f"MODEL.RFCN.DIAMETER_SCALE must be > 0, got {diameter_scale}")
        self.diameter_scale = float(diameter_scale)
        self.in_feature = in_feature
        self.feature_stride = feature_stride
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.ohem = ohem
        self.ohem_nms_thresh = ohem_nms_thresh
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

        k2 = pool_size * pool_size
        if reduction_dim > 0:
            self.reduce = Conv2d(in_channels, reduction_dim, kernel_size=1, activation=F.relu)
            nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.reduce.bias)
            map_in = reduction_dim
        else:
            self.reduce = nn.Identity()
            map_in = in_channels
        self.cls_score_maps = Conv2d(map_in, k2 * (self.num_classes + 1), kernel_size=1)
        self.box_maps = Conv2d(map_in, k2 * 4, kernel_size=1)  # class-agnostic, as in the paper
        # Small initial outputs (as Detectron2's FastRCNNOutputLayers): start near uniform
        # class scores and zero box deltas.
        nn.init.normal_(self.cls_score_maps.weight, std=0.01)
        nn.init.normal_(self.box_maps.weight, std=0.001)
        for layer in (self.cls_score_maps, self.box_maps):
            nn.init.zeros_(layer.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        in_feature = cfg.MODEL.RFCN.IN_FEATURE
        if in_feature not in input_shape:
            raise ValueError(f"MODEL.RFCN.IN_FEATURE={in_feature!r} is not a backbone output "
                             f"(outputs: {sorted(input_shape)}); add it to the backbone's OUT_FEATURES")
        ret.update(
            in_feature=in_feature,
            in_channels=input_shape[in_feature].channels,
            feature_stride=input_shape[in_feature].stride,
            pool_size=cfg.MODEL.RFCN.POOL_SIZE,
            reduction_dim=cfg.MODEL.RFCN.REDUCTION_DIM,
            sampling_ratio=cfg.MODEL.RFCN.SAMPLING_RATIO,
            box2box_transform=Box2BoxTransform(weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
            smooth_l1_beta=cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA,
            ohem=cfg.MODEL.RFCN.OHEM,
            ohem_nms_thresh=cfg.MODEL.RFCN.OHEM_NMS_THRESH,
            test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            diameter_scale=cfg.MODEL.RFCN.DIAMETER_SCALE,
        )
        if cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE != "smooth_l1":
            raise ValueError("PSROIHeads supports MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE='smooth_l1' only")
        return ret

    def _sample_proposals(self, matched_idxs, matched_labels, gt_classes) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.ohem:
            return super()._sample_proposals(matched_idxs, matched_labels, gt_classes)
        # OHEM picks the examples later, from the losses: keep every proposal that is not
        # an "ignore" match.
        if gt_classes.numel() > 0:
            labels = gt_classes[matched_idxs]
            labels[matched_labels == 0] = self.num_classes
            labels[matched_labels == -1] = -1
        else:
            labels = torch.full_like(matched_idxs, self.num_classes)
        keep = torch.nonzero(labels >= 0).squeeze(1)
        return keep, labels[keep]

    def drop_unlabelled_small(self, proposals: List[Instances], ignore_below_px: Optional[List[float]]
                              ) -> List[Instances]:
        """Remove background RoIs smaller than each image's ``ignore_below_px`` from the loss.

        A catalogue complete only above some diameter (Head et al. 2010: 20 km) leaves smaller
        craters unlabelled; a RoI on one would be taught as background. Below the limit an
        unmatched RoI is therefore neither crater nor background (as scoring ignores unmatched
        detections below it); RoIs matched to a labelled crater always count."""
        if not ignore_below_px or len(ignore_below_px) != len(proposals):
            return proposals
        out = []
        for p, limit in zip(proposals, ignore_below_px):
            if limit > 0 and len(p):
                boxes = p.proposal_boxes.tensor
                size = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0))
                p = p[~((p.gt_classes == self.num_classes) & (size < limit))]
            out.append(p)
        return out

    def forward(self, images: ImageList, features: Dict[str, torch.Tensor], proposals: List[Instances],
                targets: Optional[List[Instances]] = None):
        del images
        if self.training:
            assert targets is not None, "PSROIHeads needs targets in training"
            proposals = self.label_and_sample_proposals(proposals, targets)
            proposals = self.drop_unlabelled_small(proposals, getattr(self, "ignore_below_px", None))
        x = self.reduce(features[self.in_feature])
        boxes = [p.proposal_boxes for p in proposals]
        rois = convert_boxes_to_pooler_format(boxes)
        scale = 1.0 / self.feature_stride
        logits = ps_roi_vote(self.cls_score_maps(x), rois, self.pool_size, scale, self.sampling_ratio)
        deltas = ps_roi_vote(self.box_maps(x), rois, self.pool_size, scale, self.sampling_ratio)
        if self.training:
            return proposals, self.losses(logits, deltas, proposals)
        return self.inference(logits, deltas, proposals), {}

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        _log_classification_stats(logits, gt_classes, prefix="rfcn")
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        # Images without ground truth have no gt_boxes: their RoIs are all background, so
        # any box works as a placeholder target (never used).
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)

        cls_loss = F.cross_entropy(logits, gt_classes, reduction="none")
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        box_loss = torch.zeros_like(cls_loss)
        if fg.any():
            gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg], gt_boxes[fg])
            box_loss[fg] = smooth_l1_loss(deltas[fg], gt_deltas, self.smooth_l1_beta, reduction="none").sum(dim=1)

        if self.ohem:
            keep = self._ohem_select(cls_loss.detach() + box_loss.detach(), proposal_boxes,
                                     [len(p) for p in proposals])
            cls_loss, box_loss = cls_loss[keep], box_loss[keep]
        # Normalised by the number of RoIs used, as Detectron2's fast_rcnn losses.
        num = max(cls_loss.numel(), 1)
        # 0 x deltas keeps box_maps in the graph when no foreground RoI is left (an image without
        # craters, or OHEM keeping only background): DistributedDataParallel otherwise waits
        # forever for its gradient in that process.
        return {"loss_cls": cls_loss.sum() / num, "loss_box_reg": box_loss.sum() / num + 0.0 * deltas.sum()}

    def _ohem_select(self, roi_loss: torch.Tensor, boxes: torch.Tensor, counts: List[int]) -> torch.Tensor:
        """Indices (into the concatenated RoIs) of the hardest RoIs of each image."""
        keep, start = [], 0
        for n in counts:
            loss_i = roi_loss[start:start + n]
            if self.ohem_nms_thresh > 0:
                order = nms(boxes[start:start + n], loss_i, self.ohem_nms_thresh)  # sorted by loss
            else:
                order = torch.argsort(loss_i, descending=True)
            keep.append(order[: self.batch_size_per_image] + start)
            start += n
        return torch.cat(keep) if keep else roi_loss.new_zeros(0, dtype=torch.long)

    def inference(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: List[Instances]) -> List[Instances]:
        counts = [len(p) for p in proposals]
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        pred_boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes)  # (R, 4), class-agnostic
        if self.diameter_scale != 1.0:
            pred_boxes = scale_boxes_about_centres(pred_boxes, self.diameter_scale)
        scores = F.softmax(logits, dim=-1)
        instances, _ = fast_rcnn_inference(
            pred_boxes.split(counts), scores.split(counts), [p.image_size for p in proposals],
            self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image,
        )
        return instances

    def forward_with_given_boxes(self, features, instances):
        """Nothing to add per box (no mask/keypoint branches): kept for GeneralizedRCNN's API."""
        return instances
