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

import json
import logging
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import inference_on_dataset, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

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


def drop_empty_test_sets(cfg) -> list[str]:
    """Remove from ``DATASETS.TEST`` the registered datasets without a tile (a NAC dataset built
    with ``--test 0``): Detectron2 refuses to evaluate an empty dataset, at the end of training.
    Returns the names removed (cfg must not be frozen)."""
    registered = set(DatasetCatalog.list())
    empty = [n for n in cfg.DATASETS.TEST if n in registered and not DatasetCatalog.get(n)]
    if empty:
        logging.getLogger(__name__).info("not evaluating %s: no tiles", ", ".join(empty))
        cfg.DATASETS.TEST = tuple(n for n in cfg.DATASETS.TEST if n not in empty)
    return empty


def setup(args):
    """get_cfg + add_rfcn_config -> merge file -> merge overrides -> register datasets -> freeze."""
    cfg = get_rfcn_cfg(args.config_file, args.opts)
    setup_crater_datasets(cfg)
    drop_empty_test_sets(cfg)
    if not args.eval_only:
        check_norm_for_training(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    # Detectron2 sets up its own loggers; ours (the evaluator's summary, the calibration) log beside them.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2_rfcn", abbrev_name="rfcn")
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
    results = trainer.train()
    if comm.is_main_process():
        if cfg.TEST.CRATER_EVAL.LEARNING_CURVES:
            plot_learning_curves(Path(cfg.OUTPUT_DIR) / "metrics.json", Path(cfg.OUTPUT_DIR) / "learning_curves.png")
        calibrate_score_threshold(cfg, trainer.model, results)
    return results


#: TEST.CRATER_EVAL.CALIBRATION_RULE -> the crater metric that holds its threshold.
CALIBRATION_RULES = {"best_f1": "best_f1_score_thresh", "target_precision": "target_precision_score_thresh"}


def calibrate_score_threshold(cfg, model, results: dict | None = None) -> float | None:
    """The score threshold chosen by TEST.CRATER_EVAL.CALIBRATION_RULE on
    ``<NAME_PREFIX>_<TEST.CRATER_EVAL.CALIBRATION_SPLIT>``, recorded with the model:
    ``OUTPUT_DIR/config.yaml`` gets MODEL.RFCN.CALIBRATED_SCORE_THRESH (the default threshold of
    ``deepcraters atlas`` and ``detect`` and of evaluation with that config) and
    ``OUTPUT_DIR/calibration.json`` the rule and the metrics there. Reuses the split's metrics
    from the end-of-training evaluation when it was one of DATASETS.TEST. None when there is no
    such split or it is empty."""
    split = cfg.TEST.CRATER_EVAL.CALIBRATION_SPLIT
    rule = cfg.TEST.CRATER_EVAL.CALIBRATION_RULE
    if rule not in CALIBRATION_RULES:
        raise ValueError(f"TEST.CRATER_EVAL.CALIBRATION_RULE must be one of {sorted(CALIBRATION_RULES)}, got {rule!r}")
    name = f"{cfg.DATASETS.CRATER.NAME_PREFIX}_{split}"
    if not split or name not in DatasetCatalog.list() or not DatasetCatalog.get(name):
        return None
    metrics = None
    if results:
        by_name = results if name in results else ({name: results} if tuple(cfg.DATASETS.TEST) == (name,) else {})
        metrics = (by_name.get(name) or {}).get("craters")
    if metrics is None:
        evaluator = CraterEvaluator.from_config(cfg, name, distributed=False)
        evaluator.coco_ap = False
        was_training = model.training
        metrics = inference_on_dataset(model, Trainer.build_test_loader(cfg, name), evaluator)["craters"]
        model.train(was_training)
    log = logging.getLogger(__name__)
    threshold = float(metrics.get(CALIBRATION_RULES[rule], float("nan")))
    if threshold != threshold and rule != "best_f1":
        log.info("%s never reaches precision %g: calibrating to its best F1 instead", name,
                 cfg.TEST.CRATER_EVAL.TARGET_PRECISION)
        rule = "best_f1"
        threshold = float(metrics["best_f1_score_thresh"])
    if threshold != threshold:  # NaN: nothing detected, nothing to calibrate
        return None
    out = Path(cfg.OUTPUT_DIR)
    calibrated = cfg.clone()
    calibrated.defrost()
    calibrated.MODEL.RFCN.CALIBRATED_SCORE_THRESH = threshold
    # The boxes were made with the current scale: the matched craters' ratio would correct what is
    # left. Always recorded; applied only with TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE.
    ratio = float(metrics.get("diameter_ratio_at_" + rule, float("nan")))
    scale = float(cfg.MODEL.RFCN.DIAMETER_SCALE)
    if cfg.TEST.CRATER_EVAL.CALIBRATE_DIAMETER_SCALE and ratio == ratio and ratio > 0:
        scale *= ratio
    calibrated.MODEL.RFCN.DIAMETER_SCALE = scale
    (out / "config.yaml").write_text(calibrated.dump())
    (out / "calibration.json").write_text(json.dumps(
        {"dataset": name, "rule": rule, "target_precision": cfg.TEST.CRATER_EVAL.TARGET_PRECISION,
         "score_thresh": threshold, "best_f1": metrics["best_f1"], "diameter_ratio": ratio, "diameter_scale": scale,
         "metrics": metrics}, indent=2) + "\n")
    log.info("score threshold calibrated on %s by %s: %.3f (best F1 %.1f %% at %.3f), diameter scale %.3f, "
             "recorded in %s", name, rule, threshold, metrics["best_f1"], metrics["best_f1_score_thresh"], scale,
             out / "config.yaml")
    return threshold


def plot_learning_curves(metrics_json, out_png) -> Path | None:
    """Losses (Detectron2's medians over 20 iterations) and learning rate against iteration, from Detectron2's
    ``metrics.json`` (one JSON object per line), plus the crater metrics of any evaluations."""
    metrics_json = Path(metrics_json)
    if not metrics_json.is_file():
        return None
    rows = [json.loads(line) for line in metrics_json.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "total_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    it = np.array([r["iteration"] for r in train])
    fig, (ax, ax_eval) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for key in ["total_loss"] + sorted(k for k in train[0] if k.startswith("loss_")):
        # Detectron2 writes a row every 20 iterations, each loss already its median over them.
        v = np.array([r.get(key, np.nan) for r in train], dtype=float)
        ax.plot(it, v, marker=".", label=key, lw=2 if key == "total_loss" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (median of 20 iterations)")
    ax.legend(fontsize=8)
    if "lr" in train[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(it, [r.get("lr", np.nan) for r in train], color="0.5", ls=":", label="learning rate")
        lr_ax.set_ylabel("learning rate (dotted)")
    evals = [r for r in rows if any(k.endswith("craters/best_f1") for k in r)]
    for r in evals:
        for k, v in r.items():
            if k.endswith("craters/best_f1") or k.endswith("bbox/AP50"):
                ax_eval.scatter(r["iteration"], v, label=k)
    ax_eval.set_xlabel("iteration")
    ax_eval.set_ylabel("%")
    ax_eval.set_title("evaluations (TEST.EVAL_PERIOD and the end of training)" if evals else "no evaluation")
    if evals:
        ax_eval.legend(fontsize=8)
    fig.suptitle(f"learning curves: {metrics_json.parent.name}")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


if __name__ == "__main__":
    from detectron2_rfcn.launch import launch  # Detectron2's on GPUs; gloo CPU processes without

    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
