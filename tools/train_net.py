#!/usr/bin/env python
"""Train / evaluate the R-FCN crater detector (Detectron2's train_net convention).

    python tools/train_net.py --config-file configs/rfcn_timm_R_18_os16_cpu.yaml \\
        DATASETS.CRATER.DIR output/synthetic_tiles OUTPUT_DIR output/rfcn_synth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/rfcn_synth/model_final.pth
    python tools/train_net.py --num-gpus 8 --config-file configs/rfcn_R_50_C4_1x.yaml ...

The tile dataset named by ``DATASETS.CRATER.DIR`` is registered as
``<DATASETS.CRATER.NAME_PREFIX>_train/_val/_test``.
"""
from __future__ import annotations

import logging
import os
import sys

# Runs as a script from any directory: make the repository's packages importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import build_detection_test_loader, build_detection_train_loader  # noqa: E402
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402

from detectron2_rfcn import CraterDatasetMapper, CraterEvaluator, get_rfcn_cfg, setup_crater_datasets  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer with the crater dataset mapper and evaluator (builders only)."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return CraterEvaluator.from_config(cfg, dataset_name)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CraterDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=CraterDatasetMapper(cfg, False))


def check_norm_for_training(cfg):
    """Random weights with FrozenBN diverge (NaN) within a few iterations here: refuse early."""
    if (cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" and cfg.MODEL.RESNETS.NORM == "FrozenBN"
            and not cfg.MODEL.WEIGHTS):
        raise ValueError("MODEL.RESNETS.NORM=FrozenBN needs pretrained MODEL.WEIGHTS; to train from scratch "
                         "add: MODEL.RESNETS.NORM BN MODEL.BACKBONE.FREEZE_AT 0")


def setup(args):
    """get_cfg + add_rfcn_config -> merge file -> merge overrides -> register datasets -> freeze."""
    cfg = get_rfcn_cfg(args.config_file, args.opts)
    setup_crater_datasets(cfg)
    if not args.eval_only:
        check_norm_for_training(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            logging.getLogger("detectron2").warning("TEST.AUG is not supported for tiles; ignored")
        if res and "bbox" in res:
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
