"""detectron2_rfcn: R-FCN crater detector as a Detectron2 plugin.

Importing the package imports the modules that register with Detectron2's registries
(``RFCN`` in META_ARCH_REGISTRY, ``PSROIHeads`` in ROI_HEADS_REGISTRY,
``build_timm_backbone`` in BACKBONE_REGISTRY): a YAML can only name them after that.
"""
from .config import add_rfcn_config, get_rfcn_cfg, resolve_device
from .data import load_crater_json, read_dataset_info, register_crater_dataset, setup_crater_datasets
from .dataset_mapper import CraterDatasetMapper, RandomRot90, Rot90Transform, read_tile
from .evaluator import CraterEvaluator, match_craters
from .ps_roi_head import PSROIHeads, ps_roi_vote
from .rfcn import RFCN
from .timm_backbone import TimmBackbone, build_timm_backbone
from .weights import adapt_first_conv, convert_weights

__all__ = [
    "add_rfcn_config", "get_rfcn_cfg", "resolve_device",
    "load_crater_json", "read_dataset_info", "register_crater_dataset", "setup_crater_datasets",
    "CraterDatasetMapper", "RandomRot90", "Rot90Transform", "read_tile", "CraterEvaluator", "match_craters",
    "RFCN", "PSROIHeads", "ps_roi_vote", "TimmBackbone", "build_timm_backbone",
    "adapt_first_conv", "convert_weights",
]
