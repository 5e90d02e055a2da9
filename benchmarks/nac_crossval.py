"""Cross-validation on the labelled LRO NAC frames, whole frames held out: for each fold, build
the tile dataset (``detectron2_rfcn.nac_data --folds N --fold k``), train (unless its weights
exist), calibrate the score threshold on the fold's val frame, and score the test frames at
that threshold (precision, recall, F1), over all thresholds (best F1) and with COCO AP50.

    python benchmarks/nac_crossval.py ../shared/data/nac/train --work /tmp/nac_cv --folds 4 \\
        [--run-folds 0 1 2 3] [--weights model_final.pth] [KEY VALUE ...]   # config overrides
    # results: WORK/summary.json and a table (per fold and mean)

Training runs in its own process (``python -m detectron2_rfcn.engine``), so a fold's run can
also be started by hand into WORK/fold<k>/run and only scored here.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "NAC-Transfer" / "rfcn_timm_R_18_DC4_600it.yaml"


def _opts(data: Path, run: Path, prefix: str) -> list[str]:
    return ["DATASETS.CRATER.DIR", str(data), "DATASETS.CRATER.NAME_PREFIX", prefix,
            "DATASETS.TRAIN", f"('{prefix}_train',)", "DATASETS.TEST", f"('{prefix}_val', '{prefix}_test')",
            "OUTPUT_DIR", str(run)]


def score_fold(config: Path, data: Path, run: Path, weights: Path, prefix: str, extra: list[str]) -> dict:
    """Val metrics (and its best-F1 threshold), then test metrics at that threshold."""
    from detectron2.engine import default_argument_parser

    from detectron2_rfcn import engine

    def evaluate(split: str, more: list[str]) -> dict:
        args = default_argument_parser().parse_args(
            ["--config-file", str(config), "--eval-only", *_opts(data, run / f"eval_{split}", prefix), *extra,
             "DATASETS.TEST", f"('{prefix}_{split}',)", "MODEL.WEIGHTS", str(weights), *more])
        return engine.main(args)

    val = evaluate("val", [])
    threshold = float(val["craters"]["best_f1_score_thresh"])
    test = evaluate("test", ["MODEL.RFCN.CALIBRATED_SCORE_THRESH", str(threshold)])
    c, b = test["craters"], test["bbox"]
    return {"weights": weights.name, "val_best_f1": val["craters"]["best_f1"], "score_thresh": threshold,
            "test_num_gt": c["num_gt"], "test_precision": c["precision"], "test_recall": c["recall"],
            "test_f1": c["f1"], "test_best_f1": c["best_f1"], "test_AP50": b["AP50"], "test_AP": b["AP"],
            "test_recall_8to16px": c.get("recall_8to16px"), "test_recall_16to32px": c.get("recall_16to32px"),
            "test": test}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nac_dir", type=Path)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--run-folds", type=int, nargs="+", default=None, help="folds to run (default: all)")
    p.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--weights", default="model_final.pth", help="checkpoint of each run to score")
    a, opts = p.parse_known_args(argv)  # the rest: KEY VALUE config overrides, for training and scoring
    a.opts = opts
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
                   *_opts(data, run, prefix), *a.opts]
            if subprocess.run(cmd).returncode != 0:
                print(f"fold {k}: training failed (log in {run}/log.txt)", file=sys.stderr)
                return 1
        summary[k] = score_fold(a.config_file, data, run, weights, prefix, a.opts)
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    keys = ["test_AP50", "test_best_f1", "test_precision", "test_recall", "test_f1", "score_thresh",
            "test_recall_8to16px"]
    print("fold  " + "  ".join(f"{k[5:] if k.startswith('test_') else k:>14}" for k in keys) + "   (%, test frames)")
    for k, r in summary.items():
        print(f"{k:>4}  " + "  ".join(f"{r[key]:14.3f}" if key == "score_thresh" else f"{r[key]:14.1f}" for key in keys))
    if len(summary) > 1:
        print("mean  " + "  ".join(f"{sum(r[key] for r in summary.values()) / len(summary):14.1f}" for key in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
