"""A timm trunk as a Detectron2 backbone: the light CPU trunk of R-FCN.

Detectron2's own R-18/R-34 cannot dilate res5 (stride 32 only); timm can
(``output_stride=16``), which keeps the paper's stride-16 score maps on a trunk ~6x
cheaper than R-50. Channels and strides come from timm's ``feature_info``; nothing
is downloaded (pretrained weights only from a local file).
"""
from __future__ import annotations

from typing import Dict

import timm
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["TimmBackbone", "build_timm_backbone"]


class TimmBackbone(Backbone):
    """Features of a timm model (``features_only``) named ``res{index + 1}``."""

    def __init__(self, model_name: str, in_channels: int, out_indices, output_stride: int = 16,
                 pretrained_file: str = ""):
        super().__init__()
        kwargs = dict(features_only=True, out_indices=tuple(out_indices), in_chans=in_channels)
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        if pretrained_file:
            # timm loads the local file and adapts the first conv to in_chans itself.
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file))
        self.trunk = timm.create_model(model_name, **kwargs)
        info = self.trunk.feature_info
        self._out_features = [f"res{i + 1}" for i in out_indices]
        self._out_feature_channels = dict(zip(self._out_features, info.channels()))
        # feature_info reports undilated reductions; dilation caps the stride at output_stride.
        self._out_feature_strides = {n: min(r, output_stride) for n, r in zip(self._out_features, info.reduction())}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.trunk(x)))

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> nn.Module:
    """``MODEL.BACKBONE.NAME: build_timm_backbone``; settings under ``MODEL.TIMM``."""
    return TimmBackbone(
        cfg.MODEL.TIMM.NAME,
        in_channels=input_shape.channels,
        out_indices=cfg.MODEL.TIMM.OUT_INDICES,
        output_stride=cfg.MODEL.TIMM.OUTPUT_STRIDE,
        pretrained_file=cfg.MODEL.TIMM.PRETRAINED_FILE,
    )
