#!/usr/bin/env python
"""Is the Mean Teacher's teacher better than its student? Val accuracy (and accuracy on the labelled
training craters) of both networks of every trial of age-net runs, read from each trial's
``model_final.pth`` (it keeps the student and the teacher); for supervised runs, of the one network.

Val only: a diagnostic of the training, not a choice of settings, and it reads no test data. Accuracy
is the argmax of the logits (temperature scaling does not change it). Each trial's split is rebuilt
from its seed (``age_net.engine.make_split``), the crops from the run directory's cache.

    python benchmarks/age_teacher_vs_student.py --world /tmp/ages_img/w0 /tmp/ages_img/runs/M1 /tmp/ages_img/runs/S1 \\
        --out benchmarks/results/age_synthetic_image_10pct_teacher_vs_student.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from age_net.engine import crater_set_from_sources, make_split  # noqa: E402
from age_net.predict import load_age_model, predict_crater_set  # noqa: E402

NETWORKS = {"model": "student", "teacher": "teacher"}  # checkpoint key -> name in the output


def trial_accuracies(trial_dir: Path, world: Path, cache_dir: Path) -> dict:
    """{"seed", "<student|teacher>_<val|train>": accuracy} of one trial."""
    student = load_age_model(trial_dir / "model_final.pth", device="cpu", network="model")
    cfg = student.cfg
    cs = crater_set_from_sources(cfg, world=world, cache_dir=cache_dir, progress=False, log=lambda *_: None)
    seed = int(student.provenance["trained_on"]["seed"])
    split = make_split(student.check_schema(cs), cfg, seed)
    out = {"seed": seed}
    for key, who in NETWORKS.items():
        if key == "teacher" and not cfg.MEAN_TEACHER.ENABLED:
            continue  # supervised runs keep no teacher
        loaded = student if key == "model" else load_age_model(trial_dir / "model_final.pth", "cpu", network=key)
        for part, idx in (("val", split.val), ("train", split.train)):
            # Argmax of the calibrated probabilities: temperature scaling keeps the logits' order.
            pred = predict_crater_set(loaded, cs, idx).argmax(axis=1)
            out[f"{who}_{part}"] = round(float((pred == cs.labels[idx]).mean()), 4)
    return out


def run_accuracies(run_dir: Path, world: Path) -> dict:
    trials = [trial_accuracies(t, world, run_dir) for t in sorted(run_dir.glob("trial*"))
              if (t / "model_final.pth").exists()]
    if not trials:
        raise ValueError(f"{run_dir}: no trial with model_final.pth")
    keys = [k for k in trials[0] if k != "seed"]
    return {"trials": trials, "mean": {k: round(float(np.mean([t[k] for t in trials])), 4) for k in keys}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="OUTPUT_DIRs of train_age_net.py runs")
    p.add_argument("--world", type=Path, required=True, help="the synthetic world the runs trained on (--world)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = {"what": "val and labelled-train accuracy (argmax) of the student and the teacher of each trial",
           "world": str(args.world), "runs": {}}
    for run in args.runs:
        res["runs"][run.name] = r = run_accuracies(run, args.world)
        print(run.name, json.dumps(r["mean"]))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
