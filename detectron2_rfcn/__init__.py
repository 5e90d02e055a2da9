"""detectron2_rfcn: R-FCN crater detector as a Detectron2 plugin.

Importing the package imports the modules that register with Detectron2's registries
(``RFCN`` in META_ARCH_REGISTRY, ``PSROIHeads`` in ROI_HEADS_REGISTRY,
``build_timm_backbone`` in BACKBONE_REGISTRY): a YAML can only name them after that.
"""
import warnings

# Warnings no user can act on, silenced by exact message before Detectron2 is imported:
# Detectron2 0.6 scripts a few functions with torch.jit at import (deprecated in torch 2.x),
# and its anchor generator calls torch.meshgrid without ``indexing`` (it means "ij").
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)

from .config import add_rfcn_config, get_rfcn_cfg, resolve_device  # noqa: E402  (after the filters above)
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
