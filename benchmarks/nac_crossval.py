"""Cross-validation on the labelled LRO NAC frames, whole frames held out: for each fold, build
the tile dataset (``detectron2_rfcn.nac_data --folds N --fold k``), train (unless its weights
exist), calibrate the score threshold on the fold's val frame, and score the test frames at
that threshold (precision, recall, F1), over all thresholds (best F1) and with COCO AP50.

    python benchmarks/nac_crossval.py ../shared/data/nac/train --work /tmp/nac_cv --folds 4 \\
        [--run-folds 0 1 2 3] [--weights model_final.pth] [--out X.json] [KEY VALUE ...]  # config overrides
    # results: WORK/summary.json (or --out) and a table (per fold, mean +- std)
    python benchmarks/nac_crossval.py --combine fold0.json fold1.json ... [--out X.json]
    # folds scored separately (one summary each) into one table, mean +- std over folds

Training runs in its own process (``python -m detectron2_rfcn.engine``), so a fold's run can
also be started by hand into WORK/fold<k>/run and only scored here.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "NAC-Transfer" / "rfcn_timm_R_18_DC4_600it.yaml"
#: Columns of the table (test frames; %, except the threshold).
TABLE_KEYS = ["test_AP50", "test_best_f1", "test_precision", "test_recall", "test_f1", "score_thresh",
              "test_recall_8to16px", "test_recall_16to32px"]
#: What a fold's result must share with the others to be averaged with them.
SAME_RUN_KEYS = ("config", "weights")


def _opts(data: Path, run: Path, prefix: str) -> list[str]:
    return ["DATASETS.CRATER.DIR", str(data), "DATASETS.CRATER.NAME_PREFIX", prefix,
            "DATASETS.TRAIN", f"('{prefix}_train',)", "DATASETS.TEST", f"('{prefix}_val', '{prefix}_test')",
            "OUTPUT_DIR", str(run)]


def _config_name(config: Path) -> str:
    """The config as the repository names it (no machine path in a result)."""
    config = Path(config).resolve()
    return str(config.relative_to(REPO)) if config.is_relative_to(REPO) else config.name


def score_fold(config: Path, data: Path, run: Path, weights: Path, prefix: str, extra: list[str]) -> dict:
    """Val metrics (and its best-F1 threshold), then test metrics at that threshold."""
    from detectron2.engine import default_argument_parser

    from detectron2_rfcn import engine

    def evaluate(split: str, more: list[str]) -> dict:
        args = default_argument_parser().parse_args(
            ["--config-file", str(config), "--eval-only", *_opts(data, run / f"eval_{split}", prefix), *extra,
             "DATASETS.TEST", f"('{prefix}_{split}',)", "MODEL.WEIGHTS", str(weights), *more])
        return engine.main(args)

    # The val frame only sets the threshold: its COCO AP (minutes of pycocotools per frame) is not needed.
    val = evaluate("val", ["TEST.CRATER_EVAL.COCO_AP", "False"])
    threshold = float(val["craters"]["best_f1_score_thresh"])
    test = evaluate("test", ["MODEL.RFCN.CALIBRATED_SCORE_THRESH", str(threshold)])
    c, b = test["craters"], test["bbox"]
    return {"config": _config_name(config), "overrides": list(extra), "weights": weights.name,
            "val_best_f1": val["craters"]["best_f1"], "score_thresh": threshold,
            "test_num_gt": c["num_gt"], "test_precision": c["precision"], "test_recall": c["recall"],
            "test_f1": c["f1"], "test_best_f1": c["best_f1"], "test_AP50": b["AP50"], "test_AP": b["AP"],
            "test_recall_8to16px": c.get("recall_8to16px"), "test_recall_16to32px": c.get("recall_16to32px"),
            "test": test}


def combine_folds(summaries: list[dict]) -> dict:
    """Per-fold results (``{fold: result}`` each, as this script writes them) into one summary
    ``{"folds": {fold: result}, "mean": {...}, "std": {...}, "n_folds": n}``: mean and sample
    standard deviation (n - 1) over folds of every TABLE_KEYS column that all folds have. Refuses
    a fold given twice and folds that differ in config, overrides or checkpoint (a mean over
    folds means one setting)."""
    folds: dict[str, dict] = {}
    for summary in summaries:
        for k, result in summary.items():
            if k in folds:
                raise ValueError(f"fold {k} given twice")
            folds[k] = result
    if not folds:
        raise ValueError("no fold to combine")
    for key in (*SAME_RUN_KEYS, "overrides"):
        values = {k: r.get(key, [] if key == "overrides" else None) for k, r in folds.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            raise ValueError(f"folds differ in {key}: {values}")
    folds = dict(sorted(folds.items(), key=lambda kv: int(kv[0])))
    n = len(folds)
    mean, std = {}, {}
    for key in TABLE_KEYS:
        values = [r.get(key) for r in folds.values()]
        if any(v is None for v in values):
            continue
        mean[key] = sum(values) / n
        std[key] = math.sqrt(sum((v - mean[key]) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    first = next(iter(folds.values()))
    return {"n_folds": n, **{key: first.get(key) for key in SAME_RUN_KEYS}, "folds": folds, "mean": mean,
            "std": std}


def format_table(combined: dict) -> str:
    """Per fold, then mean +- std (sample, over folds) when there are several."""
    keys = [k for k in TABLE_KEYS if k in combined["mean"]]
    fmt = {k: ("{:.3f}" if k == "score_thresh" else "{:.1f}") for k in keys}
    head = [k[5:] if k.startswith("test_") else k for k in keys]
    lines = [f"{combined['weights']} of {combined['config']}: test frames, %",
             "fold  " + "  ".join(f"{h:>14}" for h in head)]
    for k, r in combined["folds"].items():
        lines.append(f"{k:>4}  " + "  ".join(f"{fmt[key].format(r[key]):>14}" for key in keys))
    if combined["n_folds"] > 1:
        lines.append("mean  " + "  ".join(
            f"{fmt[key].format(combined['mean'][key]) + ' +- ' + fmt[key].format(combined['std'][key]):>14}"
            for key in keys))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nac_dir", type=Path, nargs="?", help="the NAC frames and labels (not with --combine)")
    p.add_argument("--work", type=Path)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--run-folds", type=int, nargs="+", default=None, help="folds to run (default: all)")
    p.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--weights", default="model_final.pth", help="checkpoint of each run to score")
    p.add_argument("--combine", type=Path, nargs="+", help="summaries to combine (no training or scoring)")
    p.add_argument("--out", type=Path, help="summary JSON (default: WORK/summary.json; with --combine, none)")
    a, opts = p.parse_known_args(argv)  # the rest: KEY VALUE config overrides, for training and scoring
    if a.combine:
        if a.nac_dir or opts:
            p.error("--combine takes summaries only")
        combined = combine_folds([json.loads(path.read_text()) for path in a.combine])
        if a.out:
            a.out.write_text(json.dumps(combined, indent=1, default=float) + "\n")
        print(format_table(combined))
        return 0
    if a.nac_dir is None or a.work is None:
        p.error("nac_dir and --work are needed (or --combine)")
    from detectron2_rfcn.nac_data import convert_nac_to_tile_dataset

    summary = {}
    for k in a.run_folds if a.run_folds is not None else range(a.folds):
        fold = a.work / f"fold{k}"
        data, run, prefix = fold / "data", fold / "run", f"nacf{k}"
        if not (data / "dataset.json").is_file():
            convert_nac_to_tile_dataset(a.nac_dir, data, folds=a.folds, fold=k)
        weights = run / a.weights
        if not weights.is_file():
            cmd = [sys.executable, "-m", "detectron2_rfcn.engine", "--config-file", str(a.config_file),
                   *_opts(data, run, prefix), *opts]
            if subprocess.run(cmd).returncode != 0:
                print(f"fold {k}: training failed (log in {run}/log.txt)", file=sys.stderr)
                return 1
        summary[str(k)] = score_fold(a.config_file, data, run, weights, prefix, opts)
    out = a.out or a.work / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(format_table(combine_folds([summary])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
