"""``add_rfcn_config``: the config keys this plugin adds to Detectron2's defaults.

It only *adds* keys (yacs rejects unknown keys in YAML files, so ``engine.setup``
calls it before ``merge_from_file``); Detectron2's own defaults are never edited:
the values R-FCN needs for existing keys live in ``configs/Base-RFCN.yaml``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_rfcn_config(cfg: CN) -> CN:
    """Add ``MODEL.RFCN``, ``MODEL.TIMM``, ``INPUT.CRATER`` and ``TEST.CRATER_EVAL`` to ``cfg``
    (in place; also returned)."""
    # ---------------------------------------------------------------- model
    cfg.MODEL.RFCN = CN()
    # Backbone feature map that the position-sensitive score maps are computed from.
    # The paper (Dai et al. 2016) uses res5 with dilation 2, i.e. stride 16.
    cfg.MODEL.RFCN.IN_FEATURE = "res5"
    # k in the paper: the RoI is split into k x k bins, each voting from its own score map.
    cfg.MODEL.RFCN.POOL_SIZE = 7
    # Channels of the 1x1 conv (+ReLU) between the trunk and the score maps (paper: 1024).
    # 0 = no reduction layer (score maps straight from the trunk).
    cfg.MODEL.RFCN.REDUCTION_DIM = 1024
    # Bilinear samples per bin side in ps_roi_align (0 = adaptive, ceil(roi_size / k)).
    cfg.MODEL.RFCN.SAMPLING_RATIO = 2
    # Online hard example mining (Shrivastava et al. 2016, as the R-FCN paper): the head
    # scores *all* proposals (cheap in R-FCN: pooling is the only per-RoI cost) and
    # back-propagates only the MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE RoIs with the highest
    # loss (cls + box) per image. False = Detectron2's random fg/bg sampling.
    cfg.MODEL.RFCN.OHEM = True
    # IoU of the NMS run on RoIs ranked by loss before OHEM keeps the top ones, so that
    # overlapping RoIs do not all count the same hard example (paper: 0.7). <= 0: off.
    cfg.MODEL.RFCN.OHEM_NMS_THRESH = 0.7
    # Names of the input channels in the order of MODEL.PIXEL_MEAN (e.g. the tile
    # dataset's "channels"); used to adapt a first conv trained on other channels.
    cfg.MODEL.RFCN.INPUT_CHANNELS = ["dom", "dem", "slope"]
    # Score threshold calibrated on validation data after training (the best-F1 threshold of
    # TEST.CRATER_EVAL.CALIBRATION_SPLIT); engine.main writes it into OUTPUT_DIR/config.yaml, so
    # it travels with the model and is the default of `deepcraters atlas` and `detect`.
    # -1 = not calibrated (the tools then use 0.5).
    cfg.MODEL.RFCN.CALIBRATED_SCORE_THRESH = -1.0
    # Every detected box's width and height are multiplied by this about the box's centre at
    # inference (before the final NMS): a regressor that sizes craters too large or too small by
    # a steady factor is corrected where its boxes are made, so atlas, detect and evaluation
    # agree. With TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE, calibrated with the threshold: the
    # median true / detected diameter of the craters matched on the calibration split at the
    # calibrated threshold (engine.calibrate_score_threshold writes it into OUTPUT_DIR/config.yaml).
    # 1.0 = the boxes as regressed.
    cfg.MODEL.RFCN.DIAMETER_SCALE = 1.0

    # timm trunk (backbone "build_timm_backbone"): a light trunk for CPUs that, unlike
    # Detectron2's R-18/R-34, can dilate its last stage (stride 16 score maps as in the paper).
    cfg.MODEL.TIMM = CN()
    # timm model name (any timm model with features_only support).
    cfg.MODEL.TIMM.NAME = "resnet18"
    # Feature indices of timm's feature_info to expose; exposed as "res{index + 1}"
    # (for timm ResNets index 3 -> res4 (layer3), 4 -> res5 (layer4)).
    cfg.MODEL.TIMM.OUT_INDICES = [3, 4]
    # Total stride of the deepest feature (timm dilates the later stages to keep it): 16 or 32.
    cfg.MODEL.TIMM.OUTPUT_STRIDE = 16
    # Local file with pretrained timm weights ("" = random init, nothing is downloaded).
    cfg.MODEL.TIMM.PRETRAINED_FILE = ""

    # ---------------------------------------------------------------- input
    cfg.INPUT.CRATER = CN()
    # Augmentations for tiles. What each does to the apparent sun direction of the DOM
    # channel (a hillshade-like image: rims are bright on the sun side and shadowed on the
    # other): a horizontal flip mirrors the sun azimuth about north-south (az -> 360 - az,
    # sun from the east becomes sun from the west, so the shadowed half of every rim moves
    # to the other side); a vertical flip mirrors it about east-west (az -> 180 - az); a
    # 90-degree rotation turns the azimuth by 90 degrees. The model then sees illuminations
    # the training mosaic never had: good for transfer to other sensors/sun angles, a
    # handicap when train and test share one sun. DEM and slope keep their meaning
    # (a crater stays a depression), an aspect/hillshade channel would not.
    cfg.INPUT.CRATER.HFLIP_PROB = 0.5
    cfg.INPUT.CRATER.VFLIP_PROB = 0.5
    # Rotate by a random multiple of 90 degrees (exact: no interpolation of pixels or boxes).
    cfg.INPUT.CRATER.ROT90 = True
    # Craters cut by the tile edge ("truncated" in the dataset): "keep" trains on the visible
    # part as a positive (the atlas must detect craters at tile edges, which the sliding
    # window overlaps then merge); "drop" removes them from the targets. The evaluator always
    # treats them as ignore regions (neither a miss nor a false positive).
    cfg.INPUT.CRATER.TRUNCATED = "keep"
    # Re-light the "hillshade" channel with a sun from a uniformly random azimuth (elevation
    # as the dataset's) for every training tile, recomputed from its "dem" channel and the
    # tile's relief and pixel size (tiles of etl.local_tiles record both): the model learns
    # rims under every illumination, not the one sun of the training mosaic. Needs the
    # "hillshade" and "dem" channels; tiles lacking the record keep their hillshade.
    cfg.INPUT.CRATER.RANDOM_SUN_AZIMUTH = False
    # Scale jitter (training): resize each tile by a factor drawn log-uniformly from
    # [min, max] (bilinear; boxes scaled alike). A crater at another scale is still a crater,
    # so this teaches sizes the training set has few of. (1.0, 1.0) = off.
    cfg.INPUT.CRATER.SCALE_JITTER = (1.0, 1.0)
    # Brightness and contrast jitter (training) of the DOM channel only (named "dom" in
    # MODEL.RFCN.INPUT_CHANNELS: sensor gain and exposure vary, elevation does not):
    # x -> mean + (x - mean) * c + b with c ~ U(1 - CONTRAST, 1 + CONTRAST) and
    # b ~ U(-BRIGHTNESS, BRIGHTNESS) x the tile's DOM std. 0 = off.
    cfg.INPUT.CRATER.BRIGHTNESS = 0.0
    cfg.INPUT.CRATER.CONTRAST = 0.0

    # ---------------------------------------------------------------- datasets
    cfg.DATASETS.CRATER = CN()
    # Directory of a tile dataset written by etl (dataset.json + train/val/test.json);
    # "" = register nothing. Registered as <NAME_PREFIX>_train / _val / _test.
    cfg.DATASETS.CRATER.DIR = ""
    cfg.DATASETS.CRATER.NAME_PREFIX = "craters"
    # Replace MODEL.PIXEL_MEAN/STD (and MODEL.RFCN.INPUT_CHANNELS) by dataset.json's
    # per-channel statistics, computed on the training tiles.
    cfg.DATASETS.CRATER.PIXEL_STATS_FROM_DATASET = False

    # ---------------------------------------------------------------- evaluation
    cfg.TEST.CRATER_EVAL = CN()
    # Matching thresholds; -1 = the project's one rule, etl.matching
    # (MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO), applied in pixels:
    # centres at most FRAC x the larger diameter apart, diameters within RATIO.
    cfg.TEST.CRATER_EVAL.MAX_CENTRE_DISTANCE_FRAC = -1.0
    cfg.TEST.CRATER_EVAL.MAX_DIAMETER_RATIO = -1.0
    # Craters (ground truth, and unmatched predictions) smaller than this, px, are ignored.
    cfg.TEST.CRATER_EVAL.MIN_DIAMETER_PX = 10.0
    # Detections with a score below this are discarded for precision/recall/F1 (the PR
    # sweep and COCO AP use every detection).
    cfg.TEST.CRATER_EVAL.SCORE_THRESH = 0.5
    # Precision at which "recall_at_precision" is reported (the project's target: 0.9).
    cfg.TEST.CRATER_EVAL.TARGET_PRECISION = 0.9
    # Diameter bin edges, px, for the per-bin precision/recall (last bin open-ended).
    cfg.TEST.CRATER_EVAL.DIAMETER_BINS_PX = [10.0, 20.0, 40.0, 80.0, 160.0]
    # Also run pycocotools' COCO AP / AP50 (slow pure-Python path: no detectron2._C here).
    cfg.TEST.CRATER_EVAL.COCO_AP = True
    # After training, calibrate the score threshold on <DATASETS.CRATER.NAME_PREFIX>_<split>
    # (by CALIBRATION_RULE) and record it as MODEL.RFCN.CALIBRATED_SCORE_THRESH. "" = do not.
    cfg.TEST.CRATER_EVAL.CALIBRATION_SPLIT = "val"
    # How the threshold is chosen there: "best_f1" (the threshold of the best F1) or
    # "target_precision" (the lowest threshold at which precision is still TARGET_PRECISION,
    # i.e. the most recall at that precision; best F1 when the split never reaches it).
    cfg.TEST.CRATER_EVAL.CALIBRATION_RULE = "best_f1"
    # Also set MODEL.RFCN.DIAMETER_SCALE there: the median true / detected diameter of the craters
    # matched at the calibrated threshold (calibration.json records it as "diameter_ratio" either
    # way). Off by default: on LOLA the val region's ratio did not carry to other regions (the size
    # bias changes with the terrain by more than its sampling error: benchmarks/lola_diameter_scale.py),
    # and applying it made the test atlas's diameters worse.
    cfg.TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE = False
    # Write OUTPUT_DIR/learning_curves.png from Detectron2's metrics.json after training.
    cfg.TEST.CRATER_EVAL.LEARNING_CURVES = True

    # Test-time augmentation of the atlas and `detect` (detectron2_rfcn.tta): besides the tile
    # itself, the model sees these views of it (symmetries of the pixel grid: "hflip", "vflip",
    # "rot90", "rot180", "rot270", "transpose", "antitranspose"), and the craters of all views are
    # merged crater by crater (etl.matching's project rule, in pixels), each scored by the mean
    # of its views' scores (0 where a view missed it). [] = off. Each view costs one more forward
    # pass. Scores change scale: choose the score threshold on validation data made with the same
    # views (the training calibration, MODEL.RFCN.CALIBRATED_SCORE_THRESH, sees single views).
    cfg.TEST.CRATER_TTA = CN()
    cfg.TEST.CRATER_TTA.TRANSFORMS = []
    return cfg


#: The score threshold of a model that was not calibrated.
DEFAULT_SCORE_THRESH = 0.5


def default_score_threshold(cfg: CN) -> float:
    """The model's calibrated score threshold (MODEL.RFCN.CALIBRATED_SCORE_THRESH) when it has
    one, else ``DEFAULT_SCORE_THRESH``."""
    calibrated = float(cfg.MODEL.RFCN.get("CALIBRATED_SCORE_THRESH", -1.0))
    return calibrated if calibrated >= 0 else DEFAULT_SCORE_THRESH


def resolve_device(cfg: CN) -> CN:
    """Replace ``MODEL.DEVICE: auto`` by "cuda" when a GPU is visible, else "cpu" (in place)."""
    if cfg.MODEL.DEVICE == "auto":
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


def get_rfcn_cfg(config_file: Optional[str] = None, opts: Optional[Sequence[str]] = None) -> CN:
    """Detectron2's defaults + ours, merged with a YAML and ``KEY VALUE`` overrides; the device
    resolved. Not frozen (``detectron2_rfcn.engine.setup`` freezes after registering datasets)."""
    cfg = add_rfcn_config(get_cfg())
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    return resolve_device(cfg)
