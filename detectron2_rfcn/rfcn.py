"""``RFCN``: the R-FCN meta-architecture (Dai et al. 2016) registered in Detectron2.

backbone (ResNet with a dilated res5, or a light trunk) -> Detectron2's RPN on one feature
(res4 in the paper) -> a position-sensitive RoI head on the score-map feature (res5).
The data flow and I/O contract are Detectron2's ``GeneralizedRCNN`` (normalisation with
``PIXEL_MEAN/STD``, one entry per input channel; losses ``loss_rpn_cls``, ``loss_rpn_loc``,
``loss_cls``, ``loss_box_reg`` in training; ``[{"instances"}]`` rescaled to each input's
``height``/``width`` in inference), so everything built for it (trainer, evaluators,
export) works unchanged; what ``RFCN`` adds is the checks and defaults of its own parts.
"""
from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_backbone
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads

from .ps_roi_head import PSROIHeads

__all__ = ["RFCN"]


@META_ARCH_REGISTRY.register()
class RFCN(GeneralizedRCNN):
    """R-FCN: backbone + RPN + position-sensitive RoI head (``PSROIHeads`` or a subclass)."""

    @classmethod
    def from_config(cls, cfg):
        if len(cfg.MODEL.PIXEL_MEAN) != len(cfg.MODEL.PIXEL_STD):
            raise ValueError(f"MODEL.PIXEL_MEAN ({len(cfg.MODEL.PIXEL_MEAN)} values) and MODEL.PIXEL_STD "
                             f"({len(cfg.MODEL.PIXEL_STD)}) must have one entry per input channel")
        # The number of input channels (DOM + DEM channels) is the number of PIXEL_MEAN entries.
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        roi_heads = build_roi_heads(cfg, backbone.output_shape())
        if not isinstance(roi_heads, PSROIHeads):
            raise ValueError(f"RFCN needs a position-sensitive ROI head, got MODEL.ROI_HEADS.NAME="
                             f"{cfg.MODEL.ROI_HEADS.NAME!r}")
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": roi_heads,
            "input_format": cfg.INPUT.FORMAT,
            # Detectron2's training visualisation draws RGB/BGR images; tiles are not.
            "vis_period": 0,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def forward(self, batched_inputs):
        if self.training:
            # Tiles of an incomplete catalogue say below which size their craters are unlabelled
            # (``ignore_below_px``, etl.local_tiles): the RoI head must not teach those as background.
            self.roi_heads.ignore_below_px = [float(x.get("ignore_below_px") or 0.0) for x in batched_inputs]
        return super().forward(batched_inputs)
