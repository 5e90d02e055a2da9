"""The age network's configuration: fvcore/yacs ``CfgNode`` defaults, every key documented.

The same shape as ``detectron2_rfcn.config`` (YAML files under ``configs/age_net/`` with
``_BASE_``, ``KEY VALUE`` overrides on the command line) without Detectron2: the age net
has its own small tree of keys, so it starts from ``get_age_cfg_defaults()``, not from
Detectron2's ``get_cfg()``.
"""
from __future__ import annotations

from collections.abc import Sequence

from fvcore.common.config import CfgNode as CN

from etl.provenance import config_hash  # the project's one rule, re-exported for callers

__all__ = ["CN", "CONTEXT_PARTS", "attribute_size_px", "config_hash", "context_parts", "get_age_cfg",
           "get_age_cfg_defaults", "resolve_device"]


def attribute_size_px(cfg) -> int:
    """The attribute crops' size of a config (checkpoints written before the key: SIZE_PX)."""
    return int(cfg.INPUT.get("ATTRIBUTE_SIZE_PX", 0) or cfg.INPUT.SIZE_PX)


def get_age_cfg_defaults() -> CN:
    """A fresh copy of every key with its default."""
    cfg = CN()
    # ---------------------------------------------------------------- model
    cfg.MODEL = CN()
    # Which branches classify: "both" (image trunk + attribute MLP, concatenated: the original's
    # dual channel), "image" (trunk only) or "attributes" (MLP only); the last two are ablations.
    cfg.MODEL.MODE = "both"
    # timm model name of the image trunk (created with num_classes=0: pooled features out).
    cfg.MODEL.TRUNK = "resnet18"
    # Local file with pretrained timm weights for the trunk ("" = random init). Loaded through
    # timm's pretrained_cfg_overlay(file=...), which also adapts the first conv to the channels;
    # nothing is ever downloaded.
    cfg.MODEL.PRETRAINED_FILE = ""
    # Image channels, in order: "dom" (orthophoto) and/or "dem" (elevation). C = len(...) is the
    # trunk's in_chans (1 for NAC-like DOM-only or LOLA-like DEM-only data, 2 for both).
    cfg.MODEL.IMAGE_CHANNELS = ["dom", "dem"]
    # Widths of the hidden layers of the attribute MLP (Linear + BatchNorm + ReLU each).
    cfg.MODEL.ATTRIBUTE_HIDDEN = [128, 64]
    # Width of the hidden layer of the fusion head (0 = a single linear layer to the logits).
    cfg.MODEL.FUSION_HIDDEN = 128
    # Dropout before each of the fusion head's linear layers (probability).
    cfg.MODEL.DROPOUT = 0.2
    # "auto" = cuda when a GPU is visible, else cpu; or any torch device string.
    cfg.MODEL.DEVICE = "auto"

    # ---------------------------------------------------------------- input
    cfg.INPUT = CN()
    # S: crops are resampled to S x S px (etl.crops.CropSettings.size_px).
    cfg.INPUT.SIZE_PX = 64
    # The attributes (etl.attributes) are measured on crops of this size, px (same k); 0: SIZE_PX.
    # Finer than small image crops: at S = 32 a 10 km crater's pixels are 940 m, coarser than the
    # diffusion that dates it.
    cfg.INPUT.ATTRIBUTE_SIZE_PX = 64
    # k: crop side = k x the crater diameter (etl.crops.CropSettings.side_diameters); 3 reaches
    # three radii from the centre (rim, ejecta annulus, surroundings).
    cfg.INPUT.SIDE_DIAMETERS = 3.0
    # DEM channel = (elevation - median of the crop's outer ring) / DEM_SCALE_M. A fixed scale in
    # metres, not min-max per crop: a 400 m deep fresh bowl and a 100 m deep degraded one must
    # look different, since relief is the age signal. Unit: metres.
    cfg.INPUT.DEM_SCALE_M = 500.0
    # The outer ring whose median is the DEM's reference level: pixels at more than this many
    # crater radii from the centre (a 3-diameter crop reaches 3 radii at its edges). Unit: radii.
    cfg.INPUT.DEM_RING_INNER_RADII = 2.2
    # Crops with more than this fraction of nodata are "not measurable" (etl.crops).
    cfg.INPUT.MAX_INVALID_FRACTION = 0.05
    # Augmentations (both views of Mean Teacher, and supervised training). Rotations by
    # multiples of 90 degrees and flips: a crater's age does not depend on its orientation
    # (they also move the DOM's apparent sun, which is why illumination jitter goes with them).
    cfg.INPUT.ROT90 = True
    cfg.INPUT.FLIP = True
    # Illumination jitter of the DOM channel: gain ~ exp(U(-g, g)), offset ~ U(-o, o) in units of
    # the dataset's DOM standard deviation, then Gaussian pixel noise of this std (same units).
    cfg.INPUT.DOM_GAIN_JITTER = 0.2
    cfg.INPUT.DOM_OFFSET_JITTER = 0.2
    cfg.INPUT.DOM_NOISE_STD = 0.05
    # Gaussian noise added to the normalised DEM channel (in units of DEM_SCALE_M).
    cfg.INPUT.DEM_NOISE_STD = 0.01
    # Gaussian noise added to standardised attributes in training (standard deviations).
    cfg.INPUT.ATTRIBUTE_NOISE_STD = 0.05

    # ---------------------------------------------------------------- attributes
    cfg.ATTRIBUTES = CN()
    # Include stratigraphy indicators of units that are crater materials (they encode the
    # crater's own age: a leak). Real-Moon results are reported with this off.
    cfg.ATTRIBUTES.CRATER_MATERIAL_UNITS = True
    # The attributes the attribute branch reads: names or shell patterns (fnmatch) over the crater
    # set's attribute names, in the set's order; empty = all. The model's schema is the selection's,
    # so prediction applies the same selection and still refuses another schema.
    cfg.ATTRIBUTES.USE = []
    # Relative-age evidence that neither the crater's label nor the map units inside its rim give
    # (etl.superposition), added to the stratigraphy: any of "superposition" (catalogue craters on the
    # crater's floor, ejecta and rim, larger craters it sits on, crater densities; needs the crater
    # table: the craters dated, or a reference catalogue), "basins" (distance to the Moon's dated
    # multi-ring basins, on their ejecta; real-Moon basins, so not for synthetic worlds), "rays"
    # (wide-field albedo: bright halos and radial streaks; needs an albedo raster, by default the
    # DOM); comma-separated ("superposition,rays"), "all" = the three, "none" = none. Columns
    # strat_sup_*, strat_basin_*, strat_ray_*: the model's attribute schema records them, and
    # prediction measures the parts of the model's own config.
    cfg.ATTRIBUTES.CONTEXT = "none"
    # Completeness limit of the crater table for the superposition's densities, km (Head 2010: 20).
    cfg.ATTRIBUTES.CONTEXT_MIN_DIAMETER_KM = 20.0

    # ---------------------------------------------------------------- data split
    cfg.DATA = CN()
    # Spatial split: craters are grouped into lon/lat blocks of this side (degrees); whole blocks go
    # to train / val / test, never single rows (neighbouring craters share terrain).
    cfg.DATA.BLOCK_DEG = 1.0
    # Fractions of the labelled craters (approximate: whole blocks) held out for validation
    # (temperature scaling, reported metrics) and for testing.
    cfg.DATA.VAL_FRACTION = 0.15
    cfg.DATA.TEST_FRACTION = 0.25
    # Fraction of the training craters whose labels are used (1.0 = all; the rest become
    # unlabelled craters for Mean Teacher). Drawn per class so each class keeps some labels.
    cfg.DATA.LABEL_FRACTION = 1.0

    # ---------------------------------------------------------------- solver
    cfg.SOLVER = CN()
    # Optimisation steps (each: one batch of BATCH_SIZE crops).
    cfg.SOLVER.MAX_ITER = 2000
    # Crops per step. Under Mean Teacher this total is split between labelled and unlabelled
    # crops (MEAN_TEACHER.UNLABELLED_FRACTION), so a step costs the same student work.
    cfg.SOLVER.BATCH_SIZE = 64
    # AdamW learning rate (peak, after warm-up; cosine decay to 1 % at MAX_ITER) and weight decay.
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    # Linear warm-up, steps.
    cfg.SOLVER.WARMUP_ITERS = 50
    # Class imbalance: "sampler" draws labelled crops with probability 1 / (class count),
    # "loss" weights the cross-entropy by the inverse class frequency, "none" does neither.
    cfg.SOLVER.CLASS_BALANCE = "sampler"
    # Save a resumable checkpoint every this many steps (0 = only at the end).
    cfg.SOLVER.CHECKPOINT_PERIOD = 500
    # Crops per forward pass at evaluation and prediction.
    cfg.SOLVER.EVAL_BATCH_SIZE = 256

    # ---------------------------------------------------------------- mean teacher
    cfg.MEAN_TEACHER = CN()
    # Tarvainen & Valpola (2017): a teacher whose weights are an exponential moving average of
    # the student's; the student learns from labels and from agreeing with the teacher on
    # unlabelled (and labelled) crops seen under different noise.
    cfg.MEAN_TEACHER.ENABLED = False
    # alpha: teacher = alpha * teacher + (1 - alpha) * student after every step (the first steps
    # use min(alpha, 1 - 1 / (step + 1)), as the original, so early teachers are not stale).
    cfg.MEAN_TEACHER.EMA_DECAY = 0.99
    # alpha once the consistency ramp-up is over (Tarvainen & Valpola 2017 use 0.99 during the
    # ramp-up, then 0.999: a teacher that averages over longer once the student has settled);
    # 0 = EMA_DECAY throughout.
    cfg.MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP = 0.0
    # Maximum weight of the consistency loss (MSE between student and teacher softmax outputs,
    # summed over classes and divided by the number of classes, averaged over the batch).
    cfg.MEAN_TEACHER.CONSISTENCY_WEIGHT = 10.0
    # Steps of the sigmoid ramp-up of that weight: w(t) = W exp(-5 (1 - t / T)^2) for t < T.
    cfg.MEAN_TEACHER.RAMPUP_ITERS = 500
    # Fraction of each batch that is unlabelled crops.
    cfg.MEAN_TEACHER.UNLABELLED_FRACTION = 0.5
    # Evaluate and predict with the teacher (usually the better model) instead of the student.
    cfg.MEAN_TEACHER.PREDICT_WITH_TEACHER = True

    # ---------------------------------------------------------------- calibration, runs
    cfg.CALIBRATION = CN()
    # Fit a temperature T on the validation split (logits / T, minimising the NLL).
    cfg.CALIBRATION.TEMPERATURE_SCALING = True
    # Reliability-diagram / ECE bins (equal width in confidence).
    cfg.CALIBRATION.BINS = 10

    # Seed of the split, label subset, initialisation and augmentation of a trial
    # (trial i uses SEED + i).
    cfg.SEED = 0
    # Repeated trials (each with its own seed, hence its own spatial split); reports mean and std.
    cfg.TRIALS = 1
    # Where checkpoints, metrics and figures are written.
    cfg.OUTPUT_DIR = "output/age_net"
    return cfg


def resolve_device(cfg: CN) -> CN:
    """Replace ``MODEL.DEVICE: auto`` by "cuda" when a GPU is visible, else "cpu" (in place)."""
    if cfg.MODEL.DEVICE == "auto":
        import torch

        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


def get_age_cfg(config_file: str | None = None, opts: Sequence[str] | None = None) -> CN:
    """Defaults merged with a YAML (``_BASE_`` followed) and ``KEY VALUE`` overrides; device resolved."""
    cfg = get_age_cfg_defaults()
    if config_file:
        cfg.merge_from_file(str(config_file))
    if opts:
        cfg.merge_from_list(list(opts))
    check_config(cfg)
    return resolve_device(cfg)


#: The parts of ATTRIBUTES.CONTEXT (etl.superposition.CraterContext), in the order of their columns.
CONTEXT_PARTS = ("superposition", "basins", "rays")


def context_parts(cfg_or_parts) -> tuple[str, ...]:
    """ATTRIBUTES.CONTEXT of a config (or a list / comma-separated string of parts) -> the parts in
    :data:`CONTEXT_PARTS` order; "all" = every part, "none" / empty = none. Configs and checkpoints
    made before the key: none. Raises ValueError on an unknown part."""
    spec = cfg_or_parts
    if isinstance(spec, CN):
        spec = spec.ATTRIBUTES.get("CONTEXT", "none")
    if isinstance(spec, str):
        spec = spec.split(",")
    parts = {str(p).strip().lower() for p in spec or []} - {"", "none"}
    if "all" in parts:
        parts = (parts - {"all"}) | set(CONTEXT_PARTS)
    unknown = sorted(parts - set(CONTEXT_PARTS))
    if unknown:
        raise ValueError(f"ATTRIBUTES.CONTEXT: unknown part(s) {unknown}; choose from {list(CONTEXT_PARTS)}, "
                         "'all' or none")
    return tuple(p for p in CONTEXT_PARTS if p in parts)


def check_config(cfg: CN) -> None:
    """Reject values the code cannot honour, saying which key to change."""
    context_parts(cfg)
    if cfg.MODEL.MODE not in ("both", "image", "attributes"):
        raise ValueError(f"MODEL.MODE {cfg.MODEL.MODE!r}: use 'both', 'image' or 'attributes'")
    bad = [c for c in cfg.MODEL.IMAGE_CHANNELS if c not in ("dom", "dem")]
    if bad or not cfg.MODEL.IMAGE_CHANNELS or len(set(cfg.MODEL.IMAGE_CHANNELS)) != len(cfg.MODEL.IMAGE_CHANNELS):
        raise ValueError(f"MODEL.IMAGE_CHANNELS {list(cfg.MODEL.IMAGE_CHANNELS)}: one or both of 'dom', 'dem'")
    if cfg.SOLVER.CLASS_BALANCE not in ("sampler", "loss", "none"):
        raise ValueError(f"SOLVER.CLASS_BALANCE {cfg.SOLVER.CLASS_BALANCE!r}: use 'sampler', 'loss' or 'none'")
    if not 0.0 < cfg.DATA.LABEL_FRACTION <= 1.0:
        raise ValueError(f"DATA.LABEL_FRACTION {cfg.DATA.LABEL_FRACTION}: must be in (0, 1]")
    if not (cfg.MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP == 0.0 or 0.0 < cfg.MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP < 1.0):
        raise ValueError("MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP must be 0 (= EMA_DECAY) or in (0, 1)")
    if not 0.0 <= cfg.MEAN_TEACHER.UNLABELLED_FRACTION < 1.0:
        raise ValueError("MEAN_TEACHER.UNLABELLED_FRACTION must be in [0, 1)")
    if cfg.DATA.VAL_FRACTION + cfg.DATA.TEST_FRACTION >= 1.0:
        raise ValueError("DATA.VAL_FRACTION + DATA.TEST_FRACTION must leave craters to train on")

