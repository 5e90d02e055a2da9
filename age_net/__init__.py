"""age_net: the dual-channel crater age network (timm trunk + attribute MLP), its datasets over
``etl.crops`` / ``etl.attributes``, supervised and Mean-Teacher training, calibration and
prediction into the ages contract. Never imports Detectron2 or ``detectron2_rfcn``.

Submodules are imported lazily by their users; this file re-exports the public names.
"""
from age_net.config import get_age_cfg, get_age_cfg_defaults
from age_net.model import AgeNet

__all__ = ["AgeNet", "get_age_cfg", "get_age_cfg_defaults"]
