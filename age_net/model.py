"""``AgeNet``: the dual-channel crater age classifier (Yang et al. 2020, Fig. 4).

Image channel: a timm trunk (``num_classes=0``: globally pooled features) over the crater's
crop (DOM and/or DEM). Attribute channel: an MLP over the crater's standardised attributes
and their missing-value mask. The two feature vectors are concatenated and a fusion head
gives one logit per age class (``etl.age_classes``, oldest first). Shaped like open_clip's
``TimmModel``: submodules ``trunk``, ``attributes`` and ``head``, heads built from
``OrderedDict`` so parameter names stay stable across versions.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import timm
import torch
from torch import nn

from etl.age_classes import NUM_AGE_CLASSES

__all__ = ["AgeNet", "MODES"]

MODES = ("both", "image", "attributes")


def _mlp(in_dim: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_dim
    for i, h in enumerate(hidden):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"bn{i}"] = nn.BatchNorm1d(h)
        layers[f"act{i}"] = nn.ReLU(inplace=True)
        width = h
    return nn.Sequential(layers), width


class AgeNet(nn.Module):
    """Five age-class logits from a crop and/or attributes.

    ``forward(image, attributes)``: ``image`` (N, C, S, S) float, ``attributes`` (N, 2A) =
    standardised values (NaN replaced by 0) followed by a 0/1 mask of the values that were
    missing. Calibrated probabilities: ``predict_proba`` (logits / ``temperature``).
    """

    def __init__(self, *, mode: str = "both", trunk_name: str = "resnet18", in_chans: int = 2,
                 num_attributes: int = 0, attribute_hidden: Sequence[int] = (128, 64), fusion_hidden: int = 128,
                 dropout: float = 0.2, num_classes: int = NUM_AGE_CLASSES, pretrained_file: str = ""):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {MODES}")
        if mode != "image" and num_attributes <= 0:
            raise ValueError(f"mode {mode!r} needs attributes (num_attributes > 0)")
        self.mode = mode
        self.in_chans = in_chans
        self.num_attributes = num_attributes if mode != "image" else 0
        width = 0
        self.trunk: nn.Module | None = None
        if mode != "attributes":
            kwargs: dict = dict(num_classes=0, in_chans=in_chans)
            if pretrained_file:
                # timm reads the local file and adapts the first conv to in_chans; never the network.
                kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file))
            self.trunk = timm.create_model(trunk_name, **kwargs)
            width += self.trunk.num_features
        self.attributes: nn.Module | None = None
        if mode != "image":
            self.attributes, attr_width = _mlp(2 * num_attributes, attribute_hidden)
            width += attr_width
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if fusion_hidden > 0:
            head["drop0"] = nn.Dropout(dropout)
            head["fc0"] = nn.Linear(width, fusion_hidden)
            head["act0"] = nn.ReLU(inplace=True)
            width = fusion_hidden
        head["drop1"] = nn.Dropout(dropout)
        head["logits"] = nn.Linear(width, num_classes)
        self.head = nn.Sequential(head)
        # Temperature scaling (Guo et al. 2017), fitted on validation data after training; a
        # persistent buffer so that it travels with the weights.
        self.register_buffer("temperature", torch.ones(()))

    @property
    def device(self) -> torch.device:
        return self.temperature.device

    def forward(self, image: torch.Tensor | None = None, attributes: torch.Tensor | None = None) -> torch.Tensor:
        feats = []
        if self.trunk is not None:
            if image is None:
                raise ValueError(f"AgeNet in mode {self.mode!r} needs an image")
            if image.shape[1] != self.in_chans:
                raise ValueError(f"image has {image.shape[1]} channels, the trunk takes {self.in_chans}")
            feats.append(self.trunk(image))
        if self.attributes is not None:
            if attributes is None:
                raise ValueError(f"AgeNet in mode {self.mode!r} needs attributes")
            if attributes.shape[1] != 2 * self.num_attributes:
                raise ValueError(f"attributes have {attributes.shape[1]} columns, expected "
                                 f"{2 * self.num_attributes} (values + missing mask)")
            feats.append(self.attributes(attributes))
        return self.head(torch.cat(feats, dim=1))

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor | None = None, attributes: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated class probabilities (eval mode is the caller's business)."""
        return torch.softmax(self(image, attributes) / self.temperature, dim=1)

    @classmethod
    def from_config(cls, cfg, num_attributes: int) -> "AgeNet":
        return cls(mode=cfg.MODEL.MODE, trunk_name=cfg.MODEL.TRUNK, in_chans=len(cfg.MODEL.IMAGE_CHANNELS),
                   num_attributes=num_attributes, attribute_hidden=tuple(cfg.MODEL.ATTRIBUTE_HIDDEN),
                   fusion_hidden=cfg.MODEL.FUSION_HIDDEN, dropout=cfg.MODEL.DROPOUT,
                   pretrained_file=cfg.MODEL.PRETRAINED_FILE)
