"""Training and evaluation of the crater detector, Detectron2's way: ``setup()`` builds the
frozen config, ``Trainer`` is ``DefaultTrainer`` with the crater mapper and evaluator (builders
only, never the loop), ``main()`` trains or evaluates. ``tools/train_net.py`` and
``python -m detectron2_rfcn.engine`` (what ``deepcraters demo`` runs) wrap ``main`` in ``launch``.

    python -m detectron2_rfcn.engine --config-file configs/rfcn_timm_R_18_C4_1000it.yaml \\
        DATASETS.CRATER.DIR output/synthetic_tiles OUTPUT_DIR output/rfcn_synth

The tile dataset named by ``DATASETS.CRATER.DIR`` is registered as
``<DATASETS.CRATER.NAME_PREFIX>_train/_val/_test``.
"""
from __future__ import annotations

import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

from .config import get_rfcn_cfg
from .data import setup_crater_datasets
from .dataset_mapper import CraterDatasetMapper
from .evaluator import CraterEvaluator


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


def check_norm_for_training(cfg) -> None:
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
    """Train (resuming with ``--resume``), or with ``--eval-only`` evaluate ``MODEL.WEIGHTS`` on
    ``DATASETS.TEST`` and return the metrics ``{task: {metric: value}}``."""
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
